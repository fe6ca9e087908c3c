"""RankMe: the effective rank of an embedding matrix (Garrido et al., ICML 2023, arXiv 2210.02885).

RankMe(Z) = exp(-sum_k p_k log p_k) with p_k = sigma_k / ||sigma||_1 + eps over the singular values
sigma_1 >= ... of the N x K embedding matrix Z (eps = 1e-7). It is between ~1 (all embeddings on one
line) and min(N, K) (a flat spectrum): a label-free measure of dimensional collapse.

This follows the paper's formula on the singular values themselves; ``reptrix.get_rankme`` uses
the eigenvalues of the covariance (squared singular values of the centred matrix), which gives a
different (smaller) number.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from embedkit.analysis._checks import check_embeddings

__all__ = ["singular_values", "rankme", "rankme_from_spectrum"]

EPS = 1e-7
_GRAM_CHUNK = 16384


def singular_values(X, *, center: bool = False) -> np.ndarray:
    """Singular values of ``X`` (descending, float64, length min(N, K)).

    Tall matrices (N >= 4K, more than a million entries) go through the K x K Gram matrix: in
    float32 when the input is float32 and well conditioned (smallest eigenvalue of the Gram matrix
    > 1e-4 of the largest, so round-off is negligible; 100k x 384 in about a second), otherwise
    accumulated in float64 in row chunks; eigenvalues below
    the float64 round-off of the Gram matrix are set to zero, so a rank-deficient matrix has exact
    zeros as with a direct SVD. Other shapes use LAPACK's SVD directly.

    Args:
        X: N x K matrix (any float dtype).
        center: subtract the column mean first (the paper does not; off by default).

    Raises:
        AnalysisInputError: not 2-D, no rows, NaN/inf.
    """
    X = check_embeddings(X, min_rows=1, dtype=None)  # keeps float32 input as is (no copy)
    n, k = X.shape
    if center:
        X = X - X.mean(axis=0, keepdims=True, dtype=np.float64)
    with threadpool_limits(1):  # multi-threaded LAPACK on small matrices is slower, and pathological on a busy CPU
        if n >= 4 * k and n * k > 1_000_000:
            # float32 Gram first (fast); exact enough unless the matrix is ill-conditioned, in which
            # case the small singular values would be round-off noise -> redo in float64.
            if X.dtype == np.float32:
                ev = np.linalg.eigvalsh(_gram(X).astype(np.float64))[::-1]
                if ev[-1] > 1e-4 * ev[0]:
                    return np.sqrt(ev)
            G = np.zeros((k, k), dtype=np.float64)
            for i in range(0, n, _GRAM_CHUNK):
                G += _gram(np.asarray(X[i : i + _GRAM_CHUNK], dtype=np.float64))
            ev = np.linalg.eigvalsh(G)[::-1]
            tol = max(n, k) * np.finfo(np.float64).eps * max(ev[0], 0.0)
            ev = np.where(ev > tol, ev, 0.0)
            return np.sqrt(ev)
        return np.linalg.svd(np.asarray(X, dtype=np.float64), compute_uv=False)


def _gram(B: np.ndarray) -> np.ndarray:
    """B^T B with torch's (multi-threaded) matmul, which is much faster than OpenBLAS's here."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return B.T @ B
    with threadpool_limits(None):
        T = torch.from_numpy(np.ascontiguousarray(B))
        return (T.T @ T).numpy()


def rankme_from_spectrum(s, eps: float = EPS) -> float:
    """RankMe from a vector of singular values (see module docstring)."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 1.0 if len(s) else 0.0  # all-zero matrix: p_k = eps for every k -> ~1
    p = s / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def rankme(X, *, eps: float = EPS, center: bool = False, return_spectrum: bool = False):
    """RankMe effective rank of an embedding matrix.

    Args:
        X: N x K embeddings (N >= 2).
        eps: the paper's epsilon (1e-7, float32 machine precision).
        center: subtract the mean embedding first (not in the paper).
        return_spectrum: also return the singular values.

    Returns:
        float, or (float, np.ndarray of singular values) if ``return_spectrum``.

    Raises:
        AnalysisInputError: fewer than 2 rows, NaN/inf, not 2-D.

    Example:
        >>> import numpy as np
        >>> round(rankme(np.eye(8)), 3)
        8.0

    References:
        Garrido, Balestriero, Najman, LeCun. "RankMe: Assessing the downstream performance of
        pretrained self-supervised representations by their rank." ICML 2023, arXiv 2210.02885.
    """
    X = check_embeddings(X, min_rows=2, dtype=None)
    s = singular_values(X, center=center)
    r = rankme_from_spectrum(s, eps=eps)
    return (r, s) if return_spectrum else r
