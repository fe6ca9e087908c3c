"""Evaluate an :class:`~embedkit.retrieval.index.EmbeddingIndex` on queries with relevance judgements.

The Python entry point of ``embedkit index eval`` is :func:`evaluate_index`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np

from embedkit.models.resolve import model_backend
from embedkit.retrieval.metrics import retrieval_scores

__all__ = ["evaluate_index", "measure_latency", "run_from_search"]

logger = logging.getLogger(__name__)


def run_from_search(query_ids, doc_ids_per_query, scores) -> dict[str, dict[str, float]]:
    """``{query_id: {doc_id: score}}`` from per-query id lists and score rows (as ``search_ids`` returns)."""
    return {q: {d: float(s) for d, s in zip(ids, sc)} for q, ids, sc in zip(query_ids, doc_ids_per_query, scores)}


def measure_latency(search_fn, Q: np.ndarray, *, n_single: int = 200, k: int = 10) -> dict[str, float]:
    """Single-query p50/p95 latency (ms) over up to ``n_single`` queries and batch QPS over all."""
    times = []
    for i in range(min(n_single, len(Q))):
        t = time.perf_counter()
        search_fn(Q[i : i + 1], k)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    search_fn(Q, k)
    batch = time.perf_counter() - t
    return {
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p95_ms": float(np.percentile(times, 95) * 1e3),
        "batch_qps": float(len(Q) / batch) if batch > 0 else float("inf"),
    }


def evaluate_index(index, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], *,
                   query_embeddings: np.ndarray | None = None, path: str | None = None,
                   show_progress: bool = False, mode: str = "dense", where=None) -> dict:
    """nDCG@10, Recall@100, MRR@10, bytes/vector, size on disk, p50 latency and batch QPS.

    Queries are encoded through the embedding cache (unless ``query_embeddings`` are given, one row
    per judged query in the order of ``queries``); latency figures are search time only (the
    encoder's time is reported separately). Only queries that appear in ``qrels`` are evaluated.

    A judged document that is not in the index — left out of the corpus, removed, or skipped at build
    time because it was empty — counts like any document the index cannot retrieve: it stays in the
    ideal ranking, so it lowers nDCG and recall. When *no* relevant judged document is in the index the
    figures are meaningless (usually the wrong qrels or index): a warning is logged and the result has
    ``"no_judged_documents_in_index": True``.

    Args:
        index: the index to evaluate.
        queries: ``{query_id: text}``.
        qrels: ``{query_id: {doc_id: relevance}}``.
        query_embeddings: precomputed query embeddings (skips encoding).
        path: the index folder, to report its size on disk.
        show_progress: show a progress bar while encoding queries.
        mode: ``"dense"``, ``"keyword"`` (BM25; no query encoding) or ``"hybrid"`` (see
            :meth:`~embedkit.retrieval.base.IndexBase.search`).
        where: a metadata filter applied to every query (:mod:`embedkit.retrieval.filters`).

    Returns:
        A dict with ``ndcg@10``, ``recall@100``, ``mrr@10``, ``p50_ms``, ``p95_ms``, ``batch_qps``,
        ``queries``, ``documents``, ``spec``, ``index_type`` (FAISS structure), ``backend`` (the
        encoder runtime that encoded the queries), ``rescore``, ``bytes_per_vector``,
        ``query_encode_seconds``, ``judged_documents``, ``judged_documents_in_index``,
        ``skipped_empty_documents``, ``no_judged_documents_in_index``, and with ``path`` the sizes on disk.

    Example:
        .. code-block:: python

            from embedkit import EmbeddingIndex
            from embedkit.data import read_beir
            from embedkit.evaluation.retrieval import evaluate_index

            ds = read_beir("../shared/data/retrieval/scifact")
            index = EmbeddingIndex.load("scifact_idx")
            res = evaluate_index(index, ds.queries, ds.qrels, path="scifact_idx")
            print(res["ndcg@10"], res["recall@100"], res["p50_ms"])
    """
    from embedkit.cache import encode_cached

    qids = [q for q in queries if q in qrels]
    judged = sorted({d for q in qids for d, rel in qrels[q].items() if rel > 0})
    present = set(index.present_ids(judged)) if judged else set()
    if not judged:
        logger.warning("the qrels judge no document relevant for the %d evaluated queries; every score will be 0",
                       len(qids))
    elif not present:
        logger.warning("none of the %d relevant judged documents is in the index (%d documents); every score will be 0 "
                       "— check that the qrels belong to this index's corpus", len(judged), len(index))
    elif len(present) < len(judged):
        logger.info("%d of %d relevant judged documents are not in the index; they count as not retrieved",
                    len(judged) - len(present), len(judged))
    t = time.perf_counter()
    texts = [queries[q] for q in qids]
    if mode == "keyword":
        Q = None
    elif query_embeddings is None:
        Q = encode_cached(index.model, [queries[q] for q in qids], show_progress=show_progress, desc="encoding queries")
    else:
        Q = query_embeddings
    encode_s = time.perf_counter() - t
    k = 100
    extra = {"mode": mode, "where": where, "texts": texts} if (mode != "dense" or where is not None) else None
    scores, ids = index.search_ids(Q, k, **(extra or {}))
    metrics = retrieval_scores(run_from_search(qids, ids, scores), qrels)
    if extra is None:
        lat = measure_latency(lambda q, kk: index.search_embeddings(q, kk), Q, k=10)
    else:  # rows of query positions, so that each timed search gets its texts and embeddings
        def timed(P, kk):
            rows = P[:, 0]
            index.search_ids(None if Q is None else Q[rows], kk, **{**extra, "texts": [texts[r] for r in rows]})

        lat = measure_latency(timed, np.arange(len(qids))[:, None], k=10)
    out = {
        **metrics,
        **lat,
        "queries": len(qids),
        "documents": len(index),
        "spec": index.compression.spec,
        "index_type": index.index_type,
        "backend": model_backend(index.model) if query_embeddings is None and Q is not None else index.model_backend,
        "mode": mode,
        "rescore": index.rescore,
        "bytes_per_vector": index.bytes_per_vector,
        "query_encode_seconds": encode_s,
        "judged_documents": len(judged),
        "judged_documents_in_index": len(present),
        "skipped_empty_documents": int(getattr(index, "skipped_count", 0)),
        "no_judged_documents_in_index": not present,
    }
    if path is not None:
        from embedkit.retrieval.manifest import directory_size

        out["index_bytes_on_disk"] = directory_size(path)
        out["index_bytes_without_docs"] = directory_size(path, exclude=("docs.sqlite",))
    return out
