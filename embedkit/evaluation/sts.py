"""STS evaluation: Spearman correlation between cosine similarity and gold scores.

Shared by training (periodic evaluation, best-checkpoint selection) and ``embedkit eval``.
Scores are reported x100, as papers and MTEB tables do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit.data import StsDataset, read_sts_tsv
from embedkit.errors import EmbedkitError

#: the standard English test sets, by file name in ``shared/data/sts``
STANDARD_STS = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")


def spearman_cosine(emb1: np.ndarray, emb2: np.ndarray, gold: Sequence[float]) -> float:
    """Spearman's rho (x100) between row-wise cosine similarities and gold scores.

    Raises:
        EmbedkitError: mismatched sizes, fewer than 2 pairs, or gold scores that are non-finite or
            all equal (the correlation is undefined; scipy would return NaN).
    """
    from scipy.stats import spearmanr

    emb1, emb2 = np.asarray(emb1, np.float64), np.asarray(emb2, np.float64)
    if emb1.shape != emb2.shape or len(emb1) != len(gold):
        raise EmbedkitError(f"mismatched sizes: {emb1.shape}, {emb2.shape}, {len(gold)} gold scores")
    if len(gold) < 2:
        raise EmbedkitError("need at least 2 sentence pairs for a Spearman correlation")
    gold = np.asarray(gold, np.float64)
    if not np.isfinite(gold).all():
        raise EmbedkitError("gold scores contain NaN or inf")
    if gold.min() == gold.max():
        raise EmbedkitError(f"all {len(gold)} gold scores are equal ({gold[0]:g}); a Spearman correlation needs at "
                            "least two different scores")
    n1 = np.linalg.norm(emb1, axis=1)
    n2 = np.linalg.norm(emb2, axis=1)
    cos = (emb1 * emb2).sum(1) / np.maximum(n1 * n2, 1e-12)
    return float(spearmanr(cos, gold).statistic * 100)


def load_sts_sets(sources: Sequence[str | os.PathLike | StsDataset] | None = None, split: str = "test") -> list[StsDataset]:
    """Read STS sets: paths to TSV files, datasets, or ``None`` for the 7 standard sets in the data folder."""
    if sources is None:
        from embedkit._io import data_dir

        sources = [data_dir() / "sts" / f"{n}.{split}.tsv" for n in STANDARD_STS]
    return [s if isinstance(s, StsDataset) else read_sts_tsv(Path(s)) for s in sources]


def evaluate_sts(model, sets: Sequence[str | os.PathLike | StsDataset] | None = None, *, batch_size: int = 64,
                 cache=None, show_progress: bool = False) -> dict[str, float]:
    """Spearman x100 per set and their unweighted ``average``.

    Args:
        model: a SentenceTransformer (or anything with a compatible ``encode``).
        sets: STS TSV paths or :class:`~embedkit.data.StsDataset` objects; ``None`` = the 7
            standard test sets (STS12-16, STS-B, SICK-R).
        cache: passed to :func:`~embedkit.cache.encode_cached`; use ``False`` for a model that
            is still training (its weights change between calls).

    Example:
        .. code-block:: python

            from embedkit import load_encoder

            evaluate_sts(load_encoder(), ["stsb.test.tsv"])  # {"stsb": ..., "average": ...}
    """
    from embedkit.cache import encode_cached

    results: dict[str, float] = {}
    for ds in load_sts_sets(sets):
        texts = list(dict.fromkeys(ds.sentences1 + ds.sentences2))
        emb = encode_cached(model, texts, batch_size=batch_size, cache=cache, show_progress=show_progress, desc=ds.name)
        pos = {t: i for i, t in enumerate(texts)}
        e1 = emb[[pos[t] for t in ds.sentences1]]
        e2 = emb[[pos[t] for t in ds.sentences2]]
        results[ds.name] = spearman_cosine(e1, e2, ds.scores)
    results["average"] = float(np.mean([v for k, v in results.items()]))
    return results
