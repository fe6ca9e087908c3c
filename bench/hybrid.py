"""Hybrid retrieval and metadata filters on SciFact (issue 29).

1. Full SciFact corpus (5,183 documents, 300 test queries), default model (cached embeddings):
   nDCG@10 of dense, embedkit's BM25 (SQLite FTS5), hybrid (RRF k=60 over 100 + 100; and weighted
   alpha=0.5), with a standard BM25 anchor in the same run (bm25s, Lucene idf, k1=1.2 b=0.75 like
   FTS5, and bm25s' own defaults k1=1.5 b=0.75; ``pip install 'embedkit[bench]'``). Latency per mode.
2. Filtered search: a random metadata field ``bucket`` in 0..999 per document; filters at 50%, 5%
   and 0.5% selectivity; recall@10 of flat / IVF / HNSW (float) against brute force over the
   filtered subset, and p50 latency.
3. txtai's anchor in the same run (``txtai_anchor``): dense-only, keyword-only (its BM25) and hybrid
   (``hybrid=True``: its BM25 with ``normalize`` + convex 0.5/0.5 fusion, 10x limit from each side)
   on the *same vectors*: ``Embeddings(method="external", transform=...)`` looks every text up in
   the cached all-MiniLM-L6-v2 embeddings embedkit searches (no re-encoding), with an exact flat
   FAISS index (``IDMap,Flat``, like embedkit's flat dense side; txtai's default is IVF above 5,000
   documents). A check encodes 16 queries with txtai's own loader of the same model folder and
   records the largest difference from the cached vectors.

Run:  python bench/hybrid.py                (writes bench/results/hybrid.json; under the CPU lock)
      python bench/hybrid.py --subset 800   (development: judged documents + random others, quality
                                             part only, writes bench/results/hybrid-subset.json)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import load_average, machine_info, scifact, write_results  # noqa: E402

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


def txtai_anchor(doc_ids, doc_texts, qids, q_texts, D, Q, qrels, model_path):
    """txtai's dense, keyword (BM25) and hybrid search over the same cached vectors: nDCG@10 and
    Recall@100 (limit 100), p50 latency (limit 10, one query at a time, like embedkit's rows)."""
    import txtai
    from txtai import Embeddings

    vec = {t: v for t, v in zip(doc_texts, D)}
    vec.update({t: v for t, v in zip(q_texts, Q)})

    def lookup(texts):  # txtai's external transform: text -> the cached embedding (no encoding)
        return np.stack([vec[t] for t in texts]).astype(np.float32)

    flat = {"backend": "faiss", "faiss": {"components": "IDMap,Flat"}}
    configs = {"txtai_dense": {"method": "external", "transform": lookup, **flat},
               "txtai_keyword": {"keyword": True},
               "txtai_hybrid": {"method": "external", "transform": lookup, "hybrid": True, **flat}}
    docs = [(i, t, None) for i, t in zip(doc_ids, doc_texts)]
    res = {"version": getattr(txtai, "__version__", None) or _version("txtai")}
    for name, config in configs.items():
        emb = Embeddings(**config)
        t = time.perf_counter()
        emb.index(docs)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        found = emb.batchsearch(q_texts, 100)
        batch_s = time.perf_counter() - t
        lat = []
        for i in range(100):
            t = time.perf_counter()
            emb.search(q_texts[i], 10)
            lat.append(time.perf_counter() - t)
        run = {q: {d: float(s) for d, s in hits} for q, hits in zip(qids, found)}
        m = retrieval_scores(run, qrels)
        res[name] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"], "p50_ms": float(np.median(lat) * 1e3),
                     "batch_s": batch_s, "build_s": build_s,
                     "config": {k: v for k, v in emb.config.items() if k != "transform"}}
        print(name, {k: v for k, v in res[name].items() if k != "config"}, flush=True)
    # the same model: txtai's own loader on the folder, 16 queries, against the cached vectors
    own = Embeddings(path=model_path, content=False)
    got = own.batchtransform(q_texts[:16])
    ref = Q[:16] / np.linalg.norm(Q[:16], axis=1, keepdims=True)
    res["own_encoding_max_abs_diff"] = float(np.abs(np.asarray(got) - ref).max())
    res["model_path"] = model_path
    return res


def _version(pkg):
    import importlib.metadata as md

    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _args():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subset", type=int, default=0,
                    help="development: judged documents + random others (N in all), quality only")
    return ap.parse_args()


def main():
    from embedkit import EmbeddingIndex

    args = _args()
    ds, doc_ids, D, qids, Q, model = scifact()
    _, doc_texts = ds.corpus_texts()
    q_texts = [ds.queries[q] for q in qids]
    if args.subset:
        rng = np.random.default_rng(0)
        judged = {d for rel in ds.qrels.values() for d in rel}
        keep = [i for i, d in enumerate(doc_ids) if d in judged]
        others = [i for i, d in enumerate(doc_ids) if d not in judged]
        keep = sorted(keep + rng.permutation(others)[: max(0, args.subset - len(keep))].tolist())
        doc_ids, doc_texts, D = [doc_ids[i] for i in keep], [doc_texts[i] for i in keep], D[keep]
    out = {"machine": machine_info(), "documents": len(doc_ids), "queries": len(qids),
           "load_average_start": load_average()}

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
    try:
        from embedkit.models.resolve import default_model_path

        out["txtai"] = txtai_anchor(doc_ids, doc_texts, qids, q_texts, D, Q, ds.qrels, default_model_path())
        for name in ("txtai_dense", "txtai_keyword", "txtai_hybrid"):
            quality[name] = {k: v for k, v in out["txtai"][name].items() if k != "config"}
    except ImportError:
        quality["txtai_hybrid"] = "txtai not installed (pip install 'embedkit[bench]')"
    out["quality"] = quality
    if args.subset:
        out["load_average_end"] = load_average()
        print(write_results("hybrid-subset", out))
        return

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
    out["load_average_end"] = load_average()
    out["latency_flag"] = ("ok" if max(out["load_average_start"][0], out["load_average_end"][0]) <= 2.0
                           else "1-minute load above 2: latencies are indicative only")
    print(write_results("hybrid", out))


def _has_dbstat(idx) -> bool:
    try:
        idx._docs.conn.execute("SELECT 1 FROM dbstat LIMIT 1")
        return True
    except Exception:
        return False


if __name__ == "__main__":
    main()
