"""Evaluate an :class:`~embedkit.retrieval.index.EmbeddingIndex` on queries with relevance judgements."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import numpy as np

from embedkit.retrieval.metrics import retrieval_scores


def run_from_search(query_ids, doc_ids_per_query, scores) -> dict[str, dict[str, float]]:
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
                   show_progress: bool = False) -> dict:
    """nDCG@10, Recall@100, MRR@10, bytes/vector, size on disk, p50 latency and batch QPS.

    Queries are encoded through the embedding cache (unless ``query_embeddings`` are given);
    latency figures are search time only (the encoder's time is reported separately).
    """
    from embedkit.cache import encode_cached

    qids = [q for q in queries if q in qrels]
    t = time.perf_counter()
    if query_embeddings is None:
        Q = encode_cached(index.model, [queries[q] for q in qids], show_progress=show_progress, desc="encoding queries")
    else:
        Q = query_embeddings
    encode_s = time.perf_counter() - t
    k = 100
    ids, scores = index.search_ids(Q, k)
    metrics = retrieval_scores(run_from_search(qids, ids, scores), qrels)
    lat = measure_latency(lambda q, kk: index.search_embeddings(q, kk), Q, k=10)
    out = {
        **metrics,
        **lat,
        "queries": len(qids),
        "documents": len(index),
        "spec": index.compression.spec,
        "backend": index.backend,
        "rescore": index.rescore,
        "bytes_per_vector": index.bytes_per_vector,
        "query_encode_seconds": encode_s,
    }
    if path is not None:
        from embedkit.retrieval.index import directory_size

        out["index_bytes_on_disk"] = directory_size(path)
        out["index_bytes_without_docs"] = directory_size(path, exclude=("docs.sqlite",))
    return out
