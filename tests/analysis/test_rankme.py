from __future__ import annotations

import numpy as np
import pytest

from embedkit.analysis import AnalysisInputError, rankme, singular_values
from embedkit.analysis.rankme import EPS


def formula(s):
    p = s / s.sum() + EPS
    return float(np.exp(-(p * np.log(p)).sum()))


def test_identity_is_full_rank():
    assert rankme(np.eye(16)) == pytest.approx(formula(np.ones(16)), rel=1e-12)
    assert rankme(np.eye(16)) == pytest.approx(16, rel=1e-4)


def test_rank_one_is_one():
    X = np.outer(np.arange(1, 11), np.arange(1, 6)).astype(float)
    s = np.zeros(5)
    s[0] = np.linalg.norm(X)
    assert rankme(X) == pytest.approx(formula(s), rel=1e-6)
    assert rankme(X) == pytest.approx(1.0, abs=1e-4)


def test_random_matches_formula_and_spectrum():
    X = np.random.default_rng(0).standard_normal((300, 40))
    r, s = rankme(X, return_spectrum=True)
    np.testing.assert_allclose(s, np.linalg.svd(X, compute_uv=False), rtol=1e-10)
    assert r == pytest.approx(formula(s), rel=1e-12)


def test_tall_gram_path_matches_svd():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((20000, 64)) * np.linspace(0.1, 3, 64)).astype(np.float32)
    s_ref = np.linalg.svd(X.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(singular_values(X), s_ref, rtol=1e-4)
    # rank-deficient tall float32: the float64 fallback keeps exact zeros
    Y = (rng.standard_normal((20000, 3)) @ rng.standard_normal((3, 64))).astype(np.float32)
    assert rankme(Y) < 3.01


def test_100k_by_384_uses_the_d_by_d_gram_not_an_svd_of_the_rows(monkeypatch):
    """Complexity, not wall-clock (a shared machine makes timings flaky): a tall matrix must be
    reduced through its d x d Gram matrix (O(n d^2) time, O(d^2) extra memory), never an SVD of the
    n x d rows (which would also allocate n-sized work arrays)."""
    import importlib

    rm = importlib.import_module("embedkit.analysis.rankme")  # the package re-exports a function of that name

    seen = []
    real_svd, real_eigvalsh = np.linalg.svd, np.linalg.eigvalsh

    def spy_svd(a, *args, **kw):
        seen.append(("svd", np.shape(a)))
        return real_svd(a, *args, **kw)

    def spy_eigvalsh(a, *args, **kw):
        seen.append(("eigvalsh", np.shape(a)))
        return real_eigvalsh(a, *args, **kw)

    monkeypatch.setattr(rm.np.linalg, "svd", spy_svd)
    monkeypatch.setattr(rm.np.linalg, "eigvalsh", spy_eigvalsh)
    X = np.random.default_rng(0).standard_normal((100_000, 384)).astype(np.float32)
    r = rankme(X)
    assert 380 < r <= 384
    assert seen and all(shape == (384, 384) for _, shape in seen), seen


@pytest.mark.parametrize(
    "X, match",
    [(np.ones((1, 4)), "at least 2"), (np.array([[1.0, np.nan], [0, 1]]), "NaN"), (np.ones(5), "2-D")],
)
def test_bad_input(X, match):
    with pytest.raises(AnalysisInputError, match=match):
        rankme(X)
