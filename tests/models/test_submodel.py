from __future__ import annotations

import numpy as np
import pytest
import torch

from embedkit.errors import EmbedkitError
from embedkit.models.export import export_submodel
from embedkit.models.loading import load_encoder, model_fingerprint
from embedkit.models.submodel import model_depth
from embedkit.testing import make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny", hidden=32, layers=3)


TEXTS = ["the cat is on the mat", "stock price of the bank", "a dog"]


def _reference(path, L, D):
    """Full model's layer-L hidden state, mean-pooled over the mask, cut to D dims, normalised."""
    full = load_encoder(path, device="cpu")
    feats = full.tokenize(TEXTS)
    with torch.no_grad():
        out = full[0].auto_model(**{k: v for k, v in feats.items() if k in ("input_ids", "attention_mask", "token_type_ids")},
                                 output_hidden_states=True)
    h = out.hidden_states[L]
    m = feats["attention_mask"].unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1)
    v = pooled[:, :D]
    return torch.nn.functional.normalize(v, dim=-1).numpy()


@pytest.mark.parametrize("L,D", [(1, 8), (2, 16), (3, 32), (3, 4)])
def test_submodel_equals_pooled_truncated_normalised_hidden_state(tiny, L, D):
    sub = load_encoder(tiny, device="cpu", layers=L, dim=D)
    assert model_depth(sub) == L
    got = sub.encode(TEXTS, convert_to_numpy=True)
    assert got.shape == (3, D)
    np.testing.assert_allclose(got, _reference(tiny, L, D), atol=1e-5)


def test_submodel_has_its_own_fingerprint(tiny):
    assert model_fingerprint(load_encoder(tiny, layers=2, dim=16)) != model_fingerprint(load_encoder(tiny))


def test_export_loads_in_plain_sentence_transformers(tiny, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = export_submodel(tiny, tmp_path / "small", layers=2, dim=16)
    plain = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(plain.encode(TEXTS), _reference(tiny, 2, 16), atol=1e-5)
    assert len(plain[0].auto_model.encoder.layer) == 2
    with pytest.raises(EmbedkitError, match="--overwrite"):
        export_submodel(tiny, out, layers=2, dim=16)


@pytest.mark.parametrize("kw,match", [({"layers": 4}, "depth 3"), ({"layers": 0}, "depth 3"), ({"dim": 33}, "width 32"),
                                      ({"dim": 2.5}, "whole number")])
def test_bad_sizes_are_one_line_errors(tiny, kw, match):
    with pytest.raises(EmbedkitError, match=match):
        load_encoder(tiny, **kw)


def test_unknown_device_is_refused(tiny):
    with pytest.raises(EmbedkitError, match="device"):
        load_encoder(tiny, device="tpu")


def test_encode_ladder_equals_each_submodel(tiny):
    from embedkit.models.submodel import encode_ladder

    full = load_encoder(tiny, device="cpu")
    got = encode_ladder(full, TEXTS, [(1, 8), (2, 16), (3, 32)], batch_size=2)
    for (L, D), E in got.items():
        np.testing.assert_allclose(E, load_encoder(tiny, layers=L, dim=D).encode(TEXTS), atol=1e-5)


def test_index_built_with_a_submodel_reloads_it_for_queries(tiny, tmp_path):
    from embedkit.retrieval.index import EmbeddingIndex

    sub = load_encoder(tiny, layers=2, dim=16)
    idx = EmbeddingIndex.build(TEXTS, ["a", "b", "c"], model=sub, spec="float")
    idx.save(tmp_path / "idx")
    again = EmbeddingIndex.load(tmp_path / "idx")  # no model given: the recorded sub-model is rebuilt
    hits = again.search("the cat is on the mat", k=1)
    assert hits[0].id == "a" and again.model_options == {"layers": 2, "dim": 16}
    assert model_fingerprint(again.model) == model_fingerprint(sub)


def test_cli_index_build_with_layers_and_dim(tiny, tmp_path):
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    r = CliRunner().invoke(cli, ["index", "build", "-m", tiny, "--layers", "1", "--dim", "8", "-c", str(corpus),
                                 "-o", str(tmp_path / "i"), "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["index", "search", str(tmp_path / "i"), "a dog", "-k", "1", "--json"])
    assert r.exit_code == 0, r.output


def test_model_shape_reads_configs_through_read_shape(tiny, tmp_path):
    """model_shape is read_shape's (layers, hidden) (issue 23: model configs are read in one place):
    a d_model config (T5-style) is read too, and anything unreadable is None."""
    import json

    from embedkit.models.shape import read_shape
    from embedkit.models.submodel import model_shape

    assert model_shape(tiny) == (3, 32) == (read_shape(tiny).layers, read_shape(tiny).hidden)
    folder = tmp_path / "t5ish"
    folder.mkdir()
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "d_model": 48}))
    assert model_shape(folder) == (4, 48)
    (folder / "config.json").write_text(json.dumps({"d_model": 48}))
    assert model_shape(folder) is None
    assert model_shape(tmp_path / "missing") is None
