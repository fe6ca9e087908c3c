import numpy as np
import pytest

from embedkit import quantizer_from_spec
from embedkit.errors import EmbedkitError, SpecError


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)


@pytest.mark.parametrize("spec,size", [("pq:4x4", 2), ("pq:8x4", 4), ("opq:4x4", 2)])
def test_code_size_and_decode(X, spec, size):
    p = quantizer_from_spec(spec).fit(X)
    assert p.code_size == size and p.spec == spec
    codes = p.encode(X[:10])
    assert codes.shape == (10, size)
    rec = p.decode(codes)
    assert rec.shape == (10, 16)
    # reconstruction is better than predicting zero
    assert ((rec - X[:10]) ** 2).sum() < (X[:10] ** 2).sum()


def test_errors(X):
    with pytest.raises(EmbedkitError, match="not divisible by m=5"):
        quantizer_from_spec("pq:5x4").fit(X)
    with pytest.raises(EmbedkitError, match="at least 256 training vectors"):
        quantizer_from_spec("pq:4x8").fit(X[:100])
    with pytest.raises(SpecError):
        quantizer_from_spec("pq:x4")


def test_default_nbits():
    assert quantizer_from_spec("opq:48").spec == "opq:48x8"
