import numpy as np

from embedkit import quantizer_from_spec
from embedkit.compression.lsh import LSHQuantizer


def test_codes_and_seed():
    X = np.random.default_rng(0).standard_normal((50, 20)).astype(np.float32)
    a = LSHQuantizer(36, seed=4).fit(X)
    assert a.code_size == 5 and a.encode(X).shape == (50, 5) and a.spec == "lsh:36"
    np.testing.assert_array_equal(a.encode(X), LSHQuantizer(36, seed=4).fit(X).encode(X))
    assert not np.array_equal(a.encode(X), LSHQuantizer(36, seed=5).fit(X).encode(X))


def test_hamming_estimates_angle():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 16)).astype(np.float32)
    q = quantizer_from_spec("lsh:2048").fit(X)
    bits = np.unpackbits(q.encode(X[:40]), axis=1)
    ham = (bits[:, None] != bits[None]).mean(-1)
    Xn = X[:40] / np.linalg.norm(X[:40], axis=1, keepdims=True)
    angle = np.arccos(np.clip(Xn @ Xn.T, -1, 1)) / np.pi
    assert np.abs(ham - angle).max() < 0.06
