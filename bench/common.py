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


def zoomed_bars(ax, names, values, colors=None, *, fmt: str = "%.4f", reference: float | None = None,
                reference_label: str | None = None):
    """Bars whose differences can be seen: the value axis spans the data (not 0..max), every bar is
    labelled with its value, and the axis says it does not start at zero.

    Close scores (nDCG@10 0.815-0.834, STS 72.0-73.5) drawn from zero look equal; here the axis runs
    from a little below the smallest value to a little above the largest. ``reference`` draws a dashed
    line (e.g. the untrained model) to read gains and losses against.
    """
    import numpy as np

    vals = np.asarray(values, dtype=float)
    finite = vals[np.isfinite(vals)]
    bars = ax.bar(names, np.where(np.isfinite(vals), vals, 0.0), color=colors)
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = max(hi - lo, abs(hi) * 0.002, 1e-6) * 0.35
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(f"axis starts at {lo - pad:.4g}, not 0", fontsize=7, color="0.35")
    ax.bar_label(bars, fmt=fmt, fontsize=7, padding=2)
    if reference is not None:
        ax.axhline(reference, color="0.3", linestyle="--", linewidth=0.8, label=reference_label)
    return bars


def paired_bootstrap(a, b, *, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of ``a - b`` over paired per-query scores and its 95% percentile interval from ``resamples``
    resamples of the queries (the same queries for both systems): a difference whose interval holds 0 is
    within the noise of this query set."""
    import numpy as np

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean_difference": round(float(d.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "queries": int(len(d)), "resamples": resamples}
