import numpy as np
import pytest

from embedkit import quantizer_from_spec
from embedkit.compression.itq import ITQQuantizer, random_rotation
from embedkit.errors import EmbedkitError


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    # anisotropic data: PCA directions with very unequal variance (where ITQ matters)
    return (rng.standard_normal((800, 32)) * np.linspace(3, 0.2, 32)).astype(np.float32)


def test_rotation_orthogonal(X):
    q = ITQQuantizer(16).fit(X)
    R = q.rotation_.astype(np.float64)
    np.testing.assert_allclose(R @ R.T, np.eye(16), atol=1e-5)
    P = q.components_.astype(np.float64)
    np.testing.assert_allclose(P.T @ P, np.eye(16), atol=1e-5)


def test_lowers_quantization_error(X):
    q = ITQQuantizer(16).fit(X)
    learned = q.quantization_error(X)
    assert learned < q.quantization_error(X, np.eye(16)) * 0.95
    assert learned < q.quantization_error(X, random_rotation(16, np.random.default_rng(5)))
    # more iterations never hurt on the training data
    assert ITQQuantizer(16, n_iter=0).fit(X).quantization_error(X) > learned


def test_codes_and_spec(X):
    p = quantizer_from_spec("itq:24").fit(X)
    assert p.code_size == 3 and p.encode(X[:4]).shape == (4, 3) and p.spec == "itq:24"
    assert np.array_equal(np.packbits(p.quantizer.project(X[:4]) >= 0, axis=1), p.encode(X[:4]))


def test_too_many_bits(X):
    with pytest.raises(EmbedkitError, match="at most as many bits as input dimensions"):
        ITQQuantizer(64).fit(X)


def test_deterministic(X):
    a = ITQQuantizer(16, seed=1).fit(X).encode(X)
    np.testing.assert_array_equal(a, ITQQuantizer(16, seed=1).fit(X).encode(X))
