import numpy as np
import pytest

from embedkit import quantizer_from_spec
from embedkit.compression.lsh import LSHQuantizer
from embedkit.errors import EmbedkitError, SpecError


def test_codes_and_seed():
    X = np.random.default_rng(0).standard_normal((50, 20)).astype(np.float32)
    a = LSHQuantizer(36, seed=4).fit(X)
    assert a.code_size == 5 and a.encode(X).shape == (50, 5) and a.spec == "lsh:36"
    np.testing.assert_array_equal(a.encode(X), LSHQuantizer(36, seed=4).fit(X).encode(X))
    assert not np.array_equal(a.encode(X), LSHQuantizer(36, seed=5).fit(X).encode(X))


def test_hamming_estimates_angle():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 64)).astype(np.float32)
    q = quantizer_from_spec("lsh:2048").fit(X)  # 32 bits per dimension, the cap
    bits = np.unpackbits(q.encode(X[:40]), axis=1)
    ham = (bits[:, None] != bits[None]).mean(-1)
    Xn = X[:40] / np.linalg.norm(X[:40], axis=1, keepdims=True)
    angle = np.arccos(np.clip(Xn @ Xn.T, -1, 1)) / np.pi
    assert np.abs(ham - angle).max() < 0.06


def test_nbits_capped_by_the_input_dimension():
    """lsh:100000000 used to allocate a (dim x 1e8) float64 matrix (286 GiB at 384 dimensions)."""
    X = np.random.default_rng(0).standard_normal((10, 384)).astype(np.float32)
    with pytest.raises(SpecError, match=r"^lsh:100000000: at most 12288 bits for 384-dimensional vectors"):
        quantizer_from_spec("lsh:100000000").fit(X)
    assert quantizer_from_spec("lsh:12288").fit(X[:, :384]).code_size == 1536


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_nbits_validated_at_fit(bad):
    X = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    q = LSHQuantizer(bad)  # stored verbatim
    assert q.get_params() == {"nbits": bad, "seed": 0}
    with pytest.raises(EmbedkitError, match="lsh nbits must be"):
        q.fit(X)
