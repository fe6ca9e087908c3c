"""Positive-aware hard-negative mining (NV-Retriever's TopK-PercPos) with embedkit's own index.

Moreira et al. "NV-Retriever: Improving text embedding models with effective hard-negative mining"
(arXiv 2407.15831), used by NV-Embed's training: for each (query, positive) pair, retrieve the top
candidates for the query, drop every known positive of that query, and drop every candidate whose
score exceeds ``max_positive_ratio`` (95%) of the positive's score — such near-positives are often
unlabelled positives (false negatives) — then keep the ``num_negatives`` best of the rest.

Two details the paper leaves open, settled as sentence-transformers' ``mine_hard_negatives`` settles
them (``relative_margin = 1 - max_positive_ratio``):

* a query with several labelled positives is thresholded on its *weakest* positive, for every one of
  its pairs, so no kept negative outscores a labelled positive of its query;
* the threshold is ``p - (1 - ratio) * |p|`` for a positive score ``p``: ``ratio * p`` when ``p >= 0``
  (the paper's rule), and still below the positive when ``p < 0`` (``ratio * p`` would lie above it).

Candidates come from an :class:`~embedkit.retrieval.EmbeddingIndex` over the corpus, so any
compression spec can find them (``binary`` with ``rescore`` for large corpora), but every candidate is
then scored with the float cosine of the full embeddings, the scale the positive is scored on: the
threshold compares like with like whatever the spec (a binary index's own scores, 1 - 2h/n, are not
cosines). Corpus embeddings go through the embedding cache, so mining twice encodes the corpus once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit.errors import EmbedkitError

__all__ = ["MinedNegatives", "mine_hard_negatives", "percpos_filter", "percpos_threshold", "sts_pairs",
           "write_triplets"]

logger = logging.getLogger(__name__)


@dataclass
class MinedNegatives:
    """Mined negatives, one row per input (query, positive) pair.

    Scores are float cosines. ``positive_scores`` holds each pair's own positive; ``thresholds`` the
    score above which its candidates were dropped (from the query's weakest positive).
    """

    queries: list[str]
    positive_ids: list[str]
    negative_ids: list[list[str]]
    negative_scores: list[list[float]]
    positive_scores: list[float]
    stats: dict = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)


def percpos_threshold(positive_score: float, max_positive_ratio: float) -> float:
    """The TopK-PercPos threshold: candidates scoring above it are dropped as likely false negatives.

    ``positive_score - (1 - max_positive_ratio) * |positive_score|``: ``ratio x positive`` for a
    positive score >= 0 (NV-Retriever's rule), and ``(2 - ratio) x positive`` for a negative one, so the
    threshold always lies ``(1 - ratio) x |positive|`` *below* the positive (sentence-transformers'
    ``relative_margin``).

    Example:
        >>> percpos_threshold(0.8, 0.95), round(percpos_threshold(-0.2, 0.95), 6)
        (0.76, -0.21)
    """
    p, r = float(positive_score), float(max_positive_ratio)
    return r * p if p >= 0 else (2.0 - r) * p


def percpos_filter(candidate_ids: Sequence[str], candidate_scores: Sequence[float], positive_score: float, *,
                   positives: set[str], max_positive_ratio: float, num_negatives: int) -> tuple[list[str], list[float], int]:
    """TopK-PercPos on one query's ranked candidates.

    ``positive_score`` is the query's weakest labelled positive (see :func:`percpos_threshold`).
    Returns the kept ``(ids, scores)`` (at most ``num_negatives``, in rank order) and how many candidates
    the threshold removed (known positives are not counted).
    """
    threshold = percpos_threshold(positive_score, max_positive_ratio)
    kept, kept_scores, dropped = [], [], 0
    for did, s in zip(candidate_ids, candidate_scores):
        if did in positives:
            continue
        if s > threshold:
            dropped += 1
            continue
        if len(kept) < num_negatives:
            kept.append(did)
            kept_scores.append(float(s))
    return kept, kept_scores, dropped


def mine_hard_negatives(pairs: Sequence[tuple[str, str]], corpus_ids: Sequence[str], corpus_texts: Sequence[str],
                        model, *, num_negatives: int = 7, max_positive_ratio: float = 0.95,
                        candidates: int | None = None, spec: str = "float", rescore: int | None = None,
                        batch_size: int = 64, show_progress: bool = False) -> MinedNegatives:
    """Mine ``num_negatives`` hard negatives for every ``(query text, positive document id)`` pair.

    Args:
        pairs: (query, positive id) rows; a query with several positives appears once per positive;
            all its positives (and any document whose text is the query itself) are excluded from
            its negatives, and every one of its pairs is thresholded on its weakest positive.
        corpus_ids, corpus_texts: the documents to mine from.
        model: the encoder that scores candidates (usually the model about to be trained).
        num_negatives: negatives per pair.
        max_positive_ratio: drop candidates scoring above this share of the positive's score (0.95;
            see :func:`percpos_threshold` for a negative positive score).
        candidates: how many top documents to consider per query (default ``4 * num_negatives + 10``).
        spec, rescore: the index that finds the candidates (see :mod:`embedkit.compression.spec`);
            whatever it is, candidates are then scored, ranked and thresholded by float cosine.

    Raises:
        EmbedkitError: a positive id not in the corpus, bad parameters, an empty corpus.

    Example:
        .. code-block:: python

            mined = mine_hard_negatives([("what is x", "doc-3")], ids, texts, load_encoder())
            mined.negative_ids[0]    # up to 7 document ids
    """
    from embedkit.cache import encode_cached
    from embedkit.retrieval import EmbeddingIndex
    from embedkit.validation import check_finite_number, check_positive_int

    num_negatives = check_positive_int(num_negatives, "num_negatives")
    max_positive_ratio = check_finite_number(max_positive_ratio, "max_positive_ratio", low=0.0, high=1.0,
                                             low_inclusive=False)
    k = check_positive_int(candidates, "candidates") if candidates is not None else 4 * num_negatives + 10
    from embedkit.data.texts import is_blank

    keep = [i for i, t in enumerate(corpus_texts) if not is_blank(t)]
    if len(keep) < len(corpus_ids):
        logger.warning("mining: %d empty documents left out of the candidates", len(corpus_ids) - len(keep))
    corpus_ids = [corpus_ids[i] for i in keep]
    corpus_texts = [corpus_texts[i] for i in keep]
    if not corpus_ids:
        raise EmbedkitError("mining: the corpus is empty")
    pos_of = {d: i for i, d in enumerate(corpus_ids)}
    for i, (_, d) in enumerate(pairs):
        if d not in pos_of:
            raise EmbedkitError(f"pair {i + 1}: positive document id {d!r} is not in the corpus")
    docs = encode_cached(model, corpus_texts, batch_size=batch_size, show_progress=show_progress, desc="mining: corpus")
    index = EmbeddingIndex(spec=spec, rescore=rescore)
    index.add(corpus_texts, corpus_ids, embeddings=docs)
    query_texts = sorted({q for q, _ in pairs})
    Q = encode_cached(model, query_texts, batch_size=batch_size, show_progress=show_progress, desc="mining: queries")
    qrow = {q: i for i, q in enumerate(query_texts)}
    k = min(k, len(corpus_ids))
    scores, ids = index.search_ids(Q, k)
    positives: dict[str, set[str]] = {}
    for q, d in pairs:
        positives.setdefault(q, set()).add(d)
    same_text: dict[str, set[str]] = {}  # documents identical to a query are never its negatives
    for i, t in zip(corpus_ids, corpus_texts):
        if t in positives:
            same_text.setdefault(t, set()).add(i)
    excluded = {q: ps | same_text.get(q, set()) for q, ps in positives.items()}
    del scores  # the index's own scale (binary: 1 - 2h/n): candidates are scored by float cosine below
    docs_n = docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)
    Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
    weakest = {q: min(float(Qn[qrow[q]] @ docs_n[pos_of[d]]) for d in ps) for q, ps in positives.items()}
    ranked: dict[str, tuple[list[str], np.ndarray]] = {}
    for q in query_texts:  # every candidate on the positive's scale, best first
        r = qrow[q]
        cand = ids[r]
        s = docs_n[[pos_of[c] for c in cand]] @ Qn[r] if cand else np.zeros(0, dtype=np.float32)
        order = np.argsort(-s, kind="stable")
        ranked[q] = ([cand[i] for i in order], s[order])
    out = MinedNegatives([], [], [], [], [])
    dropped_total = short = 0
    for q, d in pairs:
        pos_score = float(Qn[qrow[q]] @ docs_n[pos_of[d]])
        cand, cand_scores = ranked[q]
        kept, kept_scores, dropped = percpos_filter(cand, cand_scores, weakest[q], positives=excluded[q],
                                                    max_positive_ratio=max_positive_ratio, num_negatives=num_negatives)
        dropped_total += dropped
        short += len(kept) < num_negatives
        out.queries.append(q)
        out.positive_ids.append(d)
        out.negative_ids.append(kept)
        out.negative_scores.append(kept_scores)
        out.positive_scores.append(pos_score)
        out.thresholds.append(percpos_threshold(weakest[q], max_positive_ratio))
    out.stats = {"pairs": len(pairs), "queries": len(query_texts), "candidates_per_query": k,
                 "dropped_as_near_positive": dropped_total, "pairs_with_fewer_negatives": short,
                 "max_positive_ratio": max_positive_ratio, "num_negatives": num_negatives, "spec": spec,
                 "rescore": rescore, "scores": "float cosine (candidates found with the spec, scored in float32)"}
    if short:
        logger.warning("%d of %d pairs got fewer than %d negatives; raise `candidates` (now %d)", short, len(pairs),
                       num_negatives, k)
    return out


def sts_pairs(path: str | os.PathLike, min_score: float = 4.0) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """STS pairs as retrieval pairs to mine, as NV-Embed's second stage prepares them (its section 4.2).

    Every pair ``(a, b)`` of an STS TSV (``score  sentence1  sentence2``) scoring at least ``min_score``
    gives two pairs, ``a -> b`` and ``b -> a``; the corpus is every distinct sentence of the file (ids
    ``s0``, ``s1``, ...), so negatives are mined "from the pool of other texts". Feed the result to
    :func:`mine_hard_negatives` (a query's own sentence is never its negative).

    Returns:
        ``(pairs, corpus_ids, corpus_texts)``: pairs are ``(query text, positive id)``.

    Raises:
        EmbedkitError: a bad file (one line naming its line), or no pair reaching ``min_score``.
    """
    from embedkit.data import read_sts_tsv
    from embedkit.validation import check_finite_number

    min_score = check_finite_number(min_score, "min_score")
    ds = read_sts_tsv(path)
    texts: dict[str, str] = {}
    for t in (*ds.sentences1, *ds.sentences2):
        t = " ".join(str(t).split())
        if t and t not in texts:
            texts[t] = f"s{len(texts)}"
    pairs = []
    for a, b, score in zip(ds.sentences1, ds.sentences2, ds.scores):
        a, b = " ".join(str(a).split()), " ".join(str(b).split())
        if float(score) >= min_score and a and b and a != b:
            pairs += [(a, texts[b]), (b, texts[a])]
    if not pairs:
        raise EmbedkitError(f"{path}: no pair scores {min_score:g} or more; lower the minimum score")
    return pairs, list(texts.values()), list(texts)


def _cell(text: str) -> str:
    return " ".join(str(text).split())  # the TSV is unquoted: tabs and newlines become spaces


def write_triplets(path: str | os.PathLike, mined: MinedNegatives, corpus: dict[str, str]) -> Path:
    """Write ``query  positive  negative_1 .. negative_N`` texts as a TSV (atomically); rows with fewer
    negatives than the widest row are dropped, so every row has the same columns (the count is logged)."""
    from embedkit._io import atomic_write_bytes

    n = max((len(x) for x in mined.negative_ids), default=0)
    header = ["anchor", "positive"] + [f"negative_{i + 1}" for i in range(n)]
    lines = ["\t".join(header)]
    skipped = 0
    for q, p, negs in zip(mined.queries, mined.positive_ids, mined.negative_ids):
        if len(negs) < n:
            skipped += 1
            continue
        lines.append("\t".join([_cell(q), _cell(corpus[p])] + [_cell(corpus[d]) for d in negs]))
    if skipped:
        logger.warning("%d pairs with fewer than %d negatives were left out of %s", skipped, n, path)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return Path(path)
