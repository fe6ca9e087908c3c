"""Retrieval metrics with trec_eval / pytrec_eval definitions (as mteb reports them).

``run``: ``{query_id: {doc_id: score}}``; ``qrels``: ``{query_id: {doc_id: relevance}}``.
Ranking sorts by score descending and breaks ties by document id descending, as trec_eval does.
Only queries with at least one relevant judgement are averaged (pytrec_eval's convention);
a judged query missing from the run counts as 0.

* nDCG@k: gain = relevance (not 2^rel - 1), discount log2(rank + 1); ideal DCG from the
  judged relevances, as trec_eval's ``ndcg_cut``.
* Recall@k: relevant retrieved in the top k / all relevant (rel > 0).
* MRR@k: 1 / rank of the first relevant document within the top k, else 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["ndcg_at_k", "recall_at_k", "mrr_at_k", "retrieval_scores"]

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def _ranked(scores: Mapping[str, float], k: int) -> list[str]:
    return [d for d, _ in sorted(scores.items(), key=lambda x: (x[1], x[0]), reverse=True)[:k]]


def _per_query(run: Run, qrels: Qrels, fn) -> dict[str, float]:
    out = {}
    for qid, judged in qrels.items():
        if not any(r > 0 for r in judged.values()):
            continue
        out[qid] = fn(run.get(qid, {}), judged)
    return out


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10, *, per_query: bool = False):
    def one(scores, judged):
        dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(_ranked(scores, k)) if judged.get(d, 0) > 0)
        ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:k]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        return dcg / idcg if idcg > 0 else 0.0

    v = _per_query(run, qrels, one)
    return v if per_query else _mean(v)


def recall_at_k(run: Run, qrels: Qrels, k: int = 100, *, per_query: bool = False):
    def one(scores, judged):
        rel = {d for d, r in judged.items() if r > 0}
        return len(rel.intersection(_ranked(scores, k))) / len(rel)

    v = _per_query(run, qrels, one)
    return v if per_query else _mean(v)


def mrr_at_k(run: Run, qrels: Qrels, k: int = 10, *, per_query: bool = False):
    def one(scores, judged):
        for i, d in enumerate(_ranked(scores, k)):
            if judged.get(d, 0) > 0:
                return 1.0 / (i + 1)
        return 0.0

    v = _per_query(run, qrels, one)
    return v if per_query else _mean(v)


def retrieval_scores(run: Run, qrels: Qrels) -> dict[str, float]:
    """The three headline figures: nDCG@10, Recall@100, MRR@10."""
    return {
        "ndcg@10": ndcg_at_k(run, qrels, 10),
        "recall@100": recall_at_k(run, qrels, 100),
        "mrr@10": mrr_at_k(run, qrels, 10),
    }
