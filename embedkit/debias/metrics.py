"""Bias and quality measures for word vectors: direct bias, word similarity, analogies."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import numpy as np

__all__ = ["direct_bias", "word_similarity", "analogy_accuracy", "bias_projections"]


def bias_projections(kv, direction: np.ndarray, words: Iterable[str]) -> dict[str, float]:
    """cos(w, g) for each word present in ``kv``."""
    g = np.asarray(direction, dtype=np.float64)
    g = g / np.linalg.norm(g)
    out = {}
    for w in words:
        if w in kv.key_to_index:
            v = np.asarray(kv[w], dtype=np.float64)
            n = np.linalg.norm(v)
            out[w] = float(v @ g / n) if n > 0 else 0.0
    return out


def direct_bias(kv, direction: np.ndarray, words: Iterable[str], c: float = 1.0) -> float:
    """DirectBias_c = mean over the (gender-neutral) words of |cos(w, g)|^c (Bolukbasi et al. 2016, eq. 2).

    Words missing from the vocabulary are skipped; returns NaN if none is present.
    """
    p = np.abs(np.fromiter(bias_projections(kv, direction, words).values(), dtype=np.float64))
    return float((p**c).mean()) if len(p) else float("nan")


@contextlib.contextmanager
def _quiet():
    log = logging.getLogger("gensim")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def word_similarity(kv, name: str = "wordsim353.tsv") -> dict:
    """Spearman (x100) of cosine vs human scores on gensim's test file ``name`` (wordsim353.tsv, simlex999.txt)."""
    from gensim.test.utils import datapath

    with _quiet():
        pearson, spearman, oov = kv.evaluate_word_pairs(datapath(name))
    return {"spearman": 100 * float(spearman[0]), "pearson": 100 * float(pearson[0]), "oov_percent": float(oov)}


def analogy_accuracy(kv, name: str = "questions-words.txt", restrict_vocab: int = 300000) -> dict:
    """Accuracy (x100) on gensim's analogy file (questions with all four words in the vocabulary)."""
    from gensim.test.utils import datapath

    with _quiet():
        score, sections = kv.evaluate_word_analogies(datapath(name), restrict_vocab=restrict_vocab)
    total = next((s for s in sections if s["section"] == "Total accuracy"), sections[-1])
    n = len(total["correct"]) + len(total["incorrect"])
    return {"accuracy": 100 * float(score), "n_questions": n}
