"""Exact re-ranking of candidate rows with stored float vectors — the one implementation.

Used by :class:`embedkit.retrieval.EmbeddingIndex` (float16 rescoring vectors, memory-mapped) and by
:mod:`embedkit.evaluation.sweep`, so a sweep's "rescored" figures are what an index returns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rescore"]


def rescore(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidate ``rows`` of ``vectors`` by their exact inner product with ``queries``.

    Args:
        queries: ``(nq, d)`` float query embeddings.
        vectors: ``(n, d)`` stored vectors (float16 or float32; may be a ``np.memmap``).
        rows: ``(nq, c)`` candidate row positions; ``-1`` marks padding.
        k: how many results to keep per query.

    Returns:
        ``(scores, rows)``, each ``(nq, min(k, c))``: float32 scores in decreasing order and the rows;
        padding is ``-inf`` / ``-1``. Ties are broken by the smaller row (a deterministic order that
        does not depend on the order of the candidates).

    Example:
        >>> import numpy as np
        >>> V = np.eye(3, dtype=np.float16)
        >>> s, r = rescore(np.array([[0.0, 1.0, 0.5]]), V, np.array([[0, 2, 1, -1]]), k=2)
        >>> r.tolist(), s.tolist()
        ([[1, 2]], [[1.0, 0.5]])
    """
    rows = np.asarray(rows, dtype=np.int64)
    Q = np.asarray(queries, dtype=np.float32)
    # candidates in ascending row order: reads a memory-mapped file front to back and fixes tie order
    rows = np.sort(np.where(rows >= 0, rows, np.iinfo(np.int64).max), axis=1)
    valid = rows != np.iinfo(np.int64).max
    safe = np.where(valid, rows, 0)
    uniq, inverse = np.unique(safe, return_inverse=True)
    block = np.asarray(vectors[uniq], dtype=np.float32)  # each needed row read once
    cand = block[inverse.reshape(safe.shape)]
    exact = np.einsum("qd,qcd->qc", Q, cand, dtype=np.float32)
    exact = np.where(valid, exact, -np.inf).astype(np.float32)
    order = np.argsort(-exact, axis=1, kind="stable")[:, : int(k)]
    out_rows = np.where(np.take_along_axis(valid, order, 1), np.take_along_axis(rows, order, 1), -1)
    return np.take_along_axis(exact, order, 1), out_rows
