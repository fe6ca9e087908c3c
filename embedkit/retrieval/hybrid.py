"""Search modes of an index: dense (vectors), keyword (BM25) and hybrid (both, fused), with filters.

:meth:`IndexBase.search <embedkit.retrieval.base.IndexBase.search>` and ``search_ids`` call
:func:`ranked_keys`, which runs under the index's read lock, so a search sees one state of both
sides. Hybrid search takes :data:`DEFAULT_DEPTH` candidates from each side (at least k) and fuses:

* ``fusion="rrf"`` (default): reciprocal-rank fusion, ``sum 1 / (60 + rank)`` over the two lists
  (Cormack et al. 2009; 60 is their constant). Rank-based, so the two sides' score scales never
  need to agree.
* ``fusion="weighted"``: each list's scores min-max normalised per query, then
  ``alpha * dense + (1 - alpha) * keyword`` (a document missing from a list scores 0 there).

The fused score is the hit's ``score``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedkit.errors import EmbedkitError
from embedkit.retrieval.filters import parse_where

__all__ = ["DEFAULT_DEPTH", "FUSIONS", "MODES", "RRF_K", "check_mode", "fuse", "ranked_keys"]

MODES = ("dense", "keyword", "hybrid")
FUSIONS = ("rrf", "weighted")
#: candidates taken from each side before fusing (at least k)
DEFAULT_DEPTH = 100
#: the constant of reciprocal-rank fusion
RRF_K = 60


def check_mode(mode: str, fusion: str = "rrf", alpha: float = 0.5) -> None:
    """Refuse an unknown mode or fusion, or an ``alpha`` outside [0, 1] (one line)."""
    if mode not in MODES:
        raise EmbedkitError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise EmbedkitError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise EmbedkitError(f"alpha must be a number from 0 to 1 (the dense side's weight), got {alpha!r}")


def fuse(dense: list[tuple[int, float]], keyword: list[tuple[int, float]], k: int, *, fusion: str = "rrf",
         alpha: float = 0.5) -> list[tuple[int, float]]:
    """Fuse two ranked ``(key, score)`` lists into the ``k`` best ``(key, fused score)``.

    Example:
        >>> fuse([(1, .9), (2, .8)], [(2, 7.0), (3, 5.0)], 2)
        [(2, 0.03252247488101534), (1, 0.01639344262295082)]
    """
    scores: dict[int, float] = {}
    if fusion == "rrf":
        for lst in (dense, keyword):
            for rank, (key, _) in enumerate(lst, 1):
                scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
    else:
        for lst, w in ((dense, alpha), (keyword, 1.0 - alpha)):
            if not lst:
                continue
            vals = np.array([s for _, s in lst], dtype=np.float64)
            lo, span = vals.min(), vals.max() - vals.min()
            for (key, _), v in zip(lst, vals):
                norm = (v - lo) / span if span > 0 else 1.0
                scores[key] = scores.get(key, 0.0) + w * norm
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def _dense_keys(index, Q: np.ndarray, k: int, rescore, allowed) -> list[list[tuple[int, float]]]:
    scores, rows = index._search_rows(Q, k, rescore, allowed=allowed)
    keys = index._keys
    out = []
    for row, sc in zip(rows, scores):
        ok = row >= 0
        out.append(list(zip(np.asarray(keys[row[ok]]).tolist(), sc[ok].astype(float).tolist())))
    return out


def ranked_keys(index, texts: Sequence[str] | None, Q: np.ndarray | None, k: int, *, mode: str = "dense",
                where=None, rescore: bool | None = None, fusion: str = "rrf", alpha: float = 0.5,
                depth: int | None = None) -> list[list[tuple[int, float]]]:
    """Per query, the ``k`` best ``(document key, score)``; the caller holds the index's read lock.

    Args:
        texts: the query texts (needed by ``keyword`` and ``hybrid``).
        Q: the query embeddings (needed by ``dense`` and ``hybrid``).
        where: a metadata filter (:func:`~embedkit.retrieval.filters.parse_where`).
        depth: candidates per side for hybrid search (default :data:`DEFAULT_DEPTH`, at least ``k``).
    """
    check_mode(mode, fusion, alpha)
    if mode != "dense" and not getattr(index, "keyword", False):
        raise EmbedkitError(f"mode={mode!r} needs a keyword index, and this index has none (built before keyword "
                            "search existed, or with keyword=False / --no-keyword): rebuild it with the keyword index")
    if mode != "dense" and texts is None:
        raise EmbedkitError(f"mode={mode!r} needs query texts, not only embeddings")
    if len(index) == 0:
        raise EmbedkitError("the index is empty: add documents before searching")
    flt = parse_where(where, index._docs.field_types()) if where is not None else None
    allowed = None if flt is None else index._docs.allowed_keys(flt)
    n = len(texts) if texts is not None else len(Q)
    if allowed is not None and len(allowed) == 0:
        return [[] for _ in range(n)]
    deep = k if mode != "hybrid" else max(k, DEFAULT_DEPTH if depth is None else int(depth))
    dense = _dense_keys(index, Q, deep, rescore, allowed) if mode != "keyword" else None
    kw = [index._docs.keyword_search(t, deep, flt) for t in texts] if mode != "dense" else None
    if mode == "dense":
        return dense
    if mode == "keyword":
        return kw
    return [fuse(d, w, k, fusion=fusion, alpha=alpha) for d, w in zip(dense, kw)]
