"""Shared helpers for the benchmark scripts: data paths, cached SciFact embeddings, machine info."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embedkit._io import atomic_write_json, data_dir  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def scifact_dir() -> Path:
    return data_dir() / "retrieval" / "scifact"


def scifact(model=None):
    """SciFact (test split) with cached default-model embeddings of the corpus and judged queries.

    Returns (dataset, doc_ids, doc_vectors, query_ids, query_vectors, model).
    """
    from embedkit.cache import encode_cached
    from embedkit.data import read_beir
    from embedkit.models.loading import load_encoder

    ds = read_beir(scifact_dir())
    model = model or load_encoder()
    doc_ids, doc_texts = ds.corpus_texts()
    q_ids, q_texts = ds.judged_queries()
    docs = encode_cached(model, doc_texts, desc="scifact corpus", batch_size=32)
    queries = encode_cached(model, q_texts, desc="scifact queries")
    return ds, doc_ids, docs, q_ids, queries, model


def scifact_subset(n_docs: int, seed: int):
    """SciFact test with a corpus subset: every judged document plus seeded random others (``n_docs`` in all).

    Returns (doc_ids, doc_texts, query_ids, query_texts, qrels). Retrieval scores on a subset are higher
    than on the full corpus; use them to compare methods, not with full-corpus figures.
    """
    import random

    from embedkit.data import read_beir

    ds = read_beir(scifact_dir(), split="test")
    judged = {d for rel in ds.qrels.values() for d in rel}
    others = sorted(set(ds.corpus) - judged)
    random.Random(seed).shuffle(others)
    ids = sorted(judged & set(ds.corpus)) + others[: max(0, n_docs - len(judged))]
    docs = [(ds.corpus[d].get("title", "") + " " + ds.corpus[d]["text"]).strip() for d in ids]
    qids = sorted(q for q in ds.qrels if q in ds.queries)
    return ids, docs, qids, [ds.queries[q] for q in qids], ds.qrels


def machine_info() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("embedkit", "numpy", "torch", "faiss-cpu", "sentence-transformers", "mteb", "scikit-learn", "gensim"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages (speed ratios measured under load are not results)."""
    return [round(x, 2) for x in os.getloadavg()]


def write_results(name: str, payload: dict) -> Path:
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), **payload}
    atomic_write_json(path, payload)
    print(f"wrote {path}", file=sys.stderr)
    return path


def timed(fn, *args, repeat: int = 1, **kw):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kw)
        best = min(best, time.perf_counter() - t)
    return out, best
