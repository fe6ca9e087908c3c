"""Hybrid retrieval and metadata filters on SciFact (issue 29).

1. Full SciFact corpus (5,183 documents, 300 test queries), default model (cached embeddings):
   nDCG@10 of dense, embedkit's BM25 (SQLite FTS5), hybrid (RRF k=60 over 100 + 100; and weighted
   alpha=0.5), with a standard BM25 anchor in the same run (bm25s, Lucene idf, k1=1.2 b=0.75 like
   FTS5, and bm25s' own defaults k1=1.5 b=0.75; ``pip install 'embedkit[bench]'``). Latency per mode.
2. Filtered search: a random metadata field ``bucket`` in 0..999 per document; filters at 50%, 5%
   and 0.5% selectivity; recall@10 of flat / IVF / HNSW (float) against brute force over the
   filtered subset, and p50 latency.

Run:  python bench/hybrid.py            (writes bench/results/hybrid.json)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_info, scifact, write_results  # noqa: E402

from embedkit.retrieval.metrics import retrieval_scores  # noqa: E402


def run_of(qids, ids, scores):
    return {q: {d: float(s) for d, s in zip(i, sc)} for q, i, sc in zip(qids, ids, scores)}


def bm25s_anchor(doc_ids, doc_texts, q_texts, k1, b):
    import bm25s

    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
    tok = bm25s.tokenize(doc_texts, stopwords="en", stemmer=stemmer, show_progress=False)
    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.index(tok, show_progress=False)
    qt = bm25s.tokenize(q_texts, stopwords="en", stemmer=stemmer, show_progress=False)
    res, scores = model.retrieve(qt, k=100, show_progress=False, n_threads=1)
    return [[doc_ids[j] for j in row] for row in res], scores, stemmer is not None


def main():
    from embedkit import EmbeddingIndex

    ds, doc_ids, D, qids, Q, model = scifact()
    _, doc_texts = ds.corpus_texts()
    q_texts = [ds.queries[q] for q in qids]
    out = {"machine": machine_info(), "documents": len(doc_ids), "queries": len(qids)}

    t = time.perf_counter()
    idx_nokw = EmbeddingIndex.build(doc_texts, doc_ids, embeddings=D, model=model, show_progress=False, keyword=False)
    t_nokw = time.perf_counter() - t
    t = time.perf_counter()
    idx = EmbeddingIndex.build(doc_texts, doc_ids, embeddings=D, model=model, show_progress=False)
    t_kw = time.perf_counter() - t
    n_fts = idx._docs.conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'docs_fts%'").fetchone()[0] \
        if _has_dbstat(idx) else None
    out["keyword_build"] = {"seconds_without": t_nokw, "seconds_with": t_kw, "fts_bytes": n_fts}
    del idx_nokw

    quality = {}
    for name, kw in [("dense", {}), ("keyword", {"mode": "keyword"}), ("hybrid_rrf", {"mode": "hybrid"}),
                     ("hybrid_weighted", {"mode": "hybrid", "fusion": "weighted"})]:
        extra = {**kw, "texts": q_texts} if kw else {}
        t = time.perf_counter()
        scores, ids = idx.search_ids(None if kw.get("mode") == "keyword" else Q, 100, **extra)
        batch_s = time.perf_counter() - t
        lat = []
        for i in range(100):
            t = time.perf_counter()
            idx.search_ids(None if kw.get("mode") == "keyword" else Q[i:i + 1], 10,
                           **({**kw, "texts": [q_texts[i]]} if kw else {}))
            lat.append(time.perf_counter() - t)
        m = retrieval_scores(run_of(qids, ids, scores), ds.qrels)
        quality[name] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"],
                         "p50_ms": float(np.median(lat) * 1e3), "batch_s": batch_s}
        print(name, quality[name], flush=True)
    for label, k1, b in [("bm25s_k1.2_b0.75", 1.2, 0.75), ("bm25s_k1.5_b0.75", 1.5, 0.75), ("bm25s_k0.9_b0.4", 0.9, 0.4)]:
        try:
            ids, scores, stemmed = bm25s_anchor(doc_ids, doc_texts, q_texts, k1, b)
        except ImportError:
            quality[label] = "bm25s not installed (pip install 'embedkit[bench]')"
            continue
        m = retrieval_scores(run_of(qids, ids, scores), ds.qrels)
        quality[label] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"], "stemmed": stemmed}
        print(label, quality[label], flush=True)
    out["quality"] = quality

    rng = np.random.default_rng(0)
    meta = [{"bucket": int(b)} for b in rng.integers(0, 1000, len(doc_ids))]
    buckets = np.array([m["bucket"] for m in meta])
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    filt = {}
    for index_type in ("flat", "ivf", "hnsw"):
        fidx = EmbeddingIndex.build(doc_texts, doc_ids, meta, embeddings=D, model=model, index_type=index_type,
                                    show_progress=False, keyword=False)
        for sel, cut in (("50%", 500), ("5%", 50), ("0.5%", 5)):
            where = {"bucket": {"$lt": cut}}
            subset = np.flatnonzero(buckets < cut)
            sims = Qn @ Dn[subset].T
            truth = [set(np.asarray(doc_ids)[subset[np.argsort(-s)[:10]]]) for s in sims]
            t = time.perf_counter()
            _, got = fidx.search_ids(Q, 10, where=where)
            batch_s = time.perf_counter() - t
            lat = []
            for i in range(50):
                t = time.perf_counter()
                fidx.search_ids(Q[i:i + 1], 10, where=where)
                lat.append(time.perf_counter() - t)
            recall = float(np.mean([len(set(g) & w) / len(w) for g, w in zip(got, truth)]))
            exact = all(g == [doc_ids[j] for j in subset[np.argsort(-s)[:10]]] for g, s in zip(got, sims))
            filt[f"{index_type}@{sel}"] = {"allowed": int(len(subset)), "recall@10": recall, "exact_order": exact,
                                           "p50_ms": float(np.median(lat) * 1e3), "batch_s": batch_s}
            print(index_type, sel, filt[f"{index_type}@{sel}"], flush=True)
    out["filtered"] = filt
    print(write_results("hybrid", out))


def _has_dbstat(idx) -> bool:
    try:
        idx._docs.conn.execute("SELECT 1 FROM dbstat LIMIT 1")
        return True
    except Exception:
        return False


if __name__ == "__main__":
    main()
