import numpy as np
import pytest

from embedkit import quantizer_from_spec
from embedkit.errors import EmbedkitError, SpecError


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_code_size_grows_with_bits(X, bits):
    p = quantizer_from_spec(f"rabitq:{bits}").fit(X)
    assert p.spec == f"rabitq:{bits}"
    assert 64 * bits // 8 < p.code_size <= 64 * bits // 8 + 24  # bits + float correction factors
    assert p.encode(X[:3]).shape == (3, p.code_size)


def test_more_bits_better_ranking(X):
    Q = X[:20] + 0.1
    truth = np.argsort(-(Q @ X.T), 1)[:, :10]
    rec = []
    for bits in (1, 4):
        p = quantizer_from_spec(f"rabitq:{bits}").fit(X)
        index = p.new_index("flat")
        index.add(X)
        _, rows = index.search(Q, 10)
        rec.append(np.mean([len(set(a) & set(b)) for a, b in zip(rows, truth)]))
    assert rec[1] > rec[0]


def test_backends(X):
    p = quantizer_from_spec("rabitq:1").fit(X)
    with pytest.raises(EmbedkitError, match="not 'hnsw'"):
        p.new_index("hnsw", train_X=X)
    index = p.new_index("ivf", train_X=X, nlist=4)
    index.add(X)
    assert index.search(X[:2], 3)[1].shape == (2, 3)
    with pytest.raises(SpecError):
        quantizer_from_spec("rabitq:5")
