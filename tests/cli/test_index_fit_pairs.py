"""`index build --fit-pairs` / `EmbeddingIndex.build(fit_pairs=...)`: BEBR learns from query-document pairs."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.errors import EmbedkitError
from embedkit.retrieval import EmbeddingIndex

WORDS = "cat dog kitten puppy stock market price rate python code bug test river lake boat sail".split()


def texts(n=48):
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, 6)) for _ in range(n)]


@pytest.fixture()
def spy_fit(monkeypatch):
    seen = []
    real = CompressionPipeline.fit

    def fit(self, X, pairs=None):
        seen.append(pairs)
        return real(self, X, pairs=pairs)

    monkeypatch.setattr(CompressionPipeline, "fit", fit)
    return seen


def test_build_fits_bebr_on_the_encoded_queries_and_the_indexed_documents(tiny_model, spy_fit, isolated_cache):
    docs = texts()
    ids = [f"d{i}" for i in range(len(docs))]
    pairs = [("cat and dog", "d3"), ("python bug", "d7"), ("a boat on the lake", "d3")]
    idx = EmbeddingIndex.build(docs, ids, model=tiny_model, spec="bebr:1", fit_pairs=pairs, show_progress=False)
    (Q, D), = spy_fit
    np.testing.assert_allclose(Q, idx.encode_queries([q for q, _ in pairs]) /
                               np.linalg.norm(idx.encode_queries([q for q, _ in pairs]), axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    X = np.asarray(tiny_model.encode(docs), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(D, X[[3, 7, 3]], rtol=1e-4, atol=1e-5)
    assert len(idx) == len(docs)


def test_fit_pairs_are_refused_where_they_cannot_be_used(tiny_model, isolated_cache):
    docs = texts(16)
    with pytest.raises(EmbedkitError, match="spec 'binary' does not learn from query-document pairs"):
        EmbeddingIndex.build(docs, model=tiny_model, spec="binary", fit_pairs=[("cat", "0")])
    with pytest.raises(EmbedkitError, match="fit pairs: document id 'nope' is not among the indexed documents"):
        EmbeddingIndex.build(docs, [f"d{i}" for i in range(16)], model=tiny_model, spec="bebr:1",
                             fit_pairs=[("cat", "nope")], show_progress=False)


def test_cli_fit_pairs(tiny_model_path, tmp_path, spy_fit, isolated_cache):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(texts()) + "\n")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("query\tdoc_id\ncat and dog\t4\npython bug\t8\n")
    r = CliRunner()
    res = r.invoke(cli, ["index", "build", "-m", tiny_model_path, "-c", str(corpus), "-o", str(tmp_path / "a"),
                         "--spec", "binary", "--fit-pairs", str(pairs)])
    assert res.exit_code == 2
    assert "--fit-pairs: spec 'binary' does not learn from query-document pairs" in res.output
    assert not spy_fit  # refused before anything was encoded or fitted
    res = r.invoke(cli, ["index", "build", "-m", tiny_model_path, "-c", str(corpus), "-o", str(tmp_path / "b"),
                         "--spec", "bebr:1", "--fit-pairs", str(tmp_path / "missing.tsv")])
    assert res.exit_code == 2 and "--fit-pairs" in res.output and "not found" in res.output
    res = r.invoke(cli, ["index", "build", "-m", tiny_model_path, "-c", str(corpus), "-o", str(tmp_path / "c"),
                         "--spec", "bebr:1", "--fit-pairs", str(pairs), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["documents"] == 48
    (Q, D), = spy_fit
    assert Q.shape == D.shape == (2, Q.shape[1])


def test_mrl_cut_of_a_ladder_trained_model_warns(tiny_model_path, tmp_path, isolated_cache):
    """issue 26: for a Starbucks model `mrl:D` at full depth is not a trained size; the ladder's sizes are."""
    import shutil

    from embedkit.models.shape import read_shape

    model = tmp_path / "sb"
    shutil.copytree(tiny_model_path, model)
    shape = read_shape(model)
    (model / "embedkit_sizes.json").write_text(json.dumps({"method": "starbucks", "sizes": [[1, 8], [shape.layers, 16]]}))
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(texts(16)) + "\n")
    res = CliRunner().invoke(cli, ["index", "build", "-m", str(model), "-c", str(corpus), "-o", str(tmp_path / "a"),
                                   "--spec", "mrl:8,binary"])
    assert res.exit_code == 0, res.output
    assert (f"warning: model {model}: {shape.layers} layers x 8 dims is not a size its starbucks training covered"
            in res.output)
    assert "trained sizes: --layers 1 --dim 8, --layers 2 --dim 16; mrl:D in a compression spec cuts dims" in res.output
    res = CliRunner().invoke(cli, ["index", "build", "-m", str(model), "-c", str(corpus), "-o", str(tmp_path / "b"),
                                   "--spec", "mrl:16,binary"])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.output  # a trained size
