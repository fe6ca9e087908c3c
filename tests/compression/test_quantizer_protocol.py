"""Shared quantizer protocol: every spec rejects bad input clearly and round-trips through save/load."""

import numpy as np
import pytest

from embedkit import quantizer_from_spec
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.errors import EmbedkitError, NotFittedError

SPECS = ["float", "f16", "int8", "binary", "mrl:8", "mrl:8,binary", "lsh:24", "itq:16", "pq:4x4", "opq:4x4",
         "rabitq:1", "rabitq:2", "bebr:1", "bebr:2x8", "mrl:8,bebr:2"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, X[:7] + 0.01 * rng.standard_normal((7, 16)).astype(np.float32)


def _pipe(spec):
    p = quantizer_from_spec(spec)
    if "show_progress" in p.quantizer.get_params():
        p.quantizer.set_params(show_progress=False, epochs=2)
    return p


@pytest.fixture(scope="module")
def fitted(data):
    return {spec: _pipe(spec).fit(data[0]) for spec in SPECS}


@pytest.mark.parametrize("spec", SPECS)
def test_use_before_fit(spec, data):
    p = _pipe(spec)
    with pytest.raises(NotFittedError, match="not fitted"):
        p.encode(data[0])
    with pytest.raises(NotFittedError):
        p.quantizer.encode(data[0])


@pytest.mark.parametrize("spec", SPECS)
def test_wrong_dimension(spec, fitted, data):
    with pytest.raises(EmbedkitError, match="dimension 12, expected 16"):
        fitted[spec].encode(data[0][:, :12])


@pytest.mark.parametrize("spec", SPECS)
def test_nan(spec, fitted, data):
    X = data[0][:5].copy()
    X[3, 2] = np.nan
    with pytest.raises(EmbedkitError, match="NaN or inf"):
        fitted[spec].encode(X)
    with pytest.raises(EmbedkitError, match="NaN or inf"):
        _pipe(spec).fit(np.vstack([data[0], X]))


@pytest.mark.parametrize("spec", SPECS)
def test_save_load_round_trip(spec, fitted, data, tmp_path):
    X, Q = data
    p = fitted[spec]
    codes = p.encode(X)
    assert codes.dtype == np.uint8 and codes.shape == (len(X), p.code_size)
    p.save(tmp_path)
    q = CompressionPipeline.load(tmp_path)
    assert q.spec == p.spec
    np.testing.assert_array_equal(q.encode(X), codes)
    index = p.new_index("flat")
    index.add(p.transform(X))
    s1, r1 = index.search(p.transform(Q), 5)
    restored = q.index_from_bytes(index.to_bytes(), "flat")
    assert restored.ntotal == len(X)
    s2, r2 = restored.search(q.transform(Q), 5)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    assert (s1[:, :-1] >= s1[:, 1:] - 1e-6).all(), "scores must be sorted, higher = better"


@pytest.mark.parametrize("spec", SPECS)
def test_remove_keeps_order(spec, fitted, data):
    X, Q = data
    p = fitted[spec]
    index = p.new_index("flat")
    index.add(p.transform(X[:20]))
    index.remove(np.array([0, 5]))
    assert index.ntotal == 18
    fresh = p.new_index("flat")
    fresh.add(p.transform(np.delete(X[:20], [0, 5], axis=0)))
    s1, r1 = index.search(p.transform(Q), 18)
    s2, r2 = fresh.search(p.transform(Q), 18)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r1[:, :3], r2[:, :3])


def test_empty_fit_rejected():
    with pytest.raises(EmbedkitError, match="0 vectors"):
        _pipe("bebr:1").fit(np.zeros((0, 16), dtype=np.float32))
