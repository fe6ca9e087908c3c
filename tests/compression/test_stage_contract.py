"""Stages follow scikit-learn's contract; imports go one way; sizes are capped by the data at fit."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import embedkit.compression.pipeline as pipeline_module
from embedkit import quantizer_from_spec
from embedkit.compression import REGISTRY, parse
from embedkit.compression.base import check_nlist
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.errors import EmbedkitError, SpecError

ALL = ["float", "f16", "int8", "binary", "mrl:8", "lsh:24", "itq:8", "pq:4x4", "opq:4x4", "rabitq:2", "bebr:2x8"]


@pytest.mark.parametrize("spec", ALL)
def test_params_stored_verbatim_and_round_trip(spec):
    stage = parse(spec).build()[0]
    params = stage.get_params()
    assert type(stage)(**params).get_params() == params
    assert stage.set_params(**params) is stage
    assert not any(k.endswith("_") for k in vars(stage)), "no learned attribute before fit"


def test_get_set_params_and_spec():
    p = quantizer_from_spec("itq:16")
    assert p.quantizer.get_params() == {"nbits": 16, "n_iter": 50, "seed": 0}
    p.quantizer.set_params(nbits=8, seed=3)
    assert p.spec == "itq:8" and repr(p.quantizer) == "ITQQuantizer(nbits=8, n_iter=50, seed=3)"
    X = np.random.default_rng(0).standard_normal((100, 16)).astype(np.float32)
    assert p.fit(X).code_size == 1


def test_validation_happens_at_fit():
    X = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    q = parse("itq:8").build()[0].set_params(n_iter=-1)
    with pytest.raises(EmbedkitError, match="itq n_iter must be >= 0, got -1"):
        q.fit(X)
    with pytest.raises(SpecError, match=r"^itq:64 needs at most as many bits as input dimensions \(16\)"):
        quantizer_from_spec("itq:64").fit(X)
    with pytest.raises(SpecError, match=r"^mrl:32 needs embeddings of at least 32 dimensions, got 16"):
        quantizer_from_spec("mrl:32").fit(X)


def test_pipeline_does_not_import_spec():
    tree = ast.parse(Path(pipeline_module.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not any("spec" in (m or "") for m in imported), imported


def test_from_spec_builds_a_parsed_spec():
    pipe = CompressionPipeline.from_spec(parse("mrl:8,binary"))
    assert pipe.spec == "mrl:8,binary" and not pipe.is_fitted
    with pytest.raises(SpecError, match="takes a parsed spec"):
        CompressionPipeline.from_spec("binary")
    assert set(REGISTRY) == {"float", "f16", "int8", "binary", "mrl", "lsh", "itq", "pq", "opq", "rabitq", "bebr"}


def test_load_a_pipeline_saved_before_parameters_were_recorded(tmp_path):
    """Folders written by earlier versions (no "params" per stage) still load."""
    X = np.random.default_rng(0).standard_normal((60, 16)).astype(np.float32)
    new = quantizer_from_spec("mrl:8,lsh:24").fit(X)
    new.quantizer.set_params(seed=5)
    new.quantizer.fit(new.transform(X))
    new.save(tmp_path)
    meta = json.loads((tmp_path / "quantizer.json").read_text())
    for rec in meta["stages"]:
        del rec["params"]
        rec["config"].pop("nbits_", None)
    meta["stages"][1]["config"]["seed"] = 5  # what the old writer recorded
    (tmp_path / "quantizer.json").write_text(json.dumps(meta))
    old = CompressionPipeline.load(tmp_path)
    assert old.spec == "mrl:8,lsh:24" and old.quantizer.seed == 5
    np.testing.assert_array_equal(old.encode(X), new.encode(X))


@pytest.mark.parametrize("spec", ["float", "int8", "binary", "lsh:64", "pq:4x4"])
def test_ivf_nlist_checked(spec):
    X = np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32)
    p = quantizer_from_spec(spec).fit(np.vstack([X] * 10))
    with pytest.raises(EmbedkitError, match=r"^nlist \(IVF lists, --nlist\) is 1000 but backend 'ivf' has only 30 "
                                            r"training vectors: use nlist <= 30"):
        p.new_index("ivf", nlist=1000, train_X=X)
    with pytest.raises(EmbedkitError, match=r"nlist \(IVF lists, --nlist\) must be >= 1, got 0"):
        p.new_index("ivf", nlist=0, train_X=X)
    index = p.new_index("ivf", nlist=3, train_X=X)
    index.add(p.transform(X))
    assert index.ntotal == 30


def test_check_nlist():
    assert check_nlist(None, 10_000) == 256  # min(4 sqrt(n), n // 39)
    with pytest.raises(EmbedkitError, match="whole number"):
        check_nlist(2.5, 100)
    bebr = quantizer_from_spec("bebr:1x8")
    bebr.quantizer.set_params(epochs=0)
    bebr.fit(np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32))
    with pytest.raises(EmbedkitError, match="must be >= 1, got 0"):
        bebr.new_index("ivf", nlist=0)
