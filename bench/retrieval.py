"""Retrieval index benchmark: embedkit's EmbeddingIndex against the plain sentence-transformers path.

Part 1 (SciFact, default model, same cached embeddings for both): nDCG@10, Recall@100, bytes per
vector, build time, single-query p50 search latency and batch QPS for embedkit's float, int8,
binary, binary + rescore, mrl:128 and mrl:128,binary + rescore, and for the anchor
(``quantize_embeddings`` + ``semantic_search_faiss`` with its rescoring).

Part 2 (200k synthetic 384-d unit vectors): float flat vs binary flat single-query latency, batch
QPS and index bytes, embedkit and anchor side by side.

    python bench/retrieval.py [--synthetic-n 200000] [--skip-synthetic]
Writes bench/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402

from embedkit.compression.base import l2_normalize  # noqa: E402
from embedkit.evaluation.retrieval import measure_latency, run_from_search  # noqa: E402
from embedkit.retrieval.index import EmbeddingIndex, directory_size  # noqa: E402
from embedkit.retrieval.metrics import retrieval_scores  # noqa: E402

EMBEDKIT_CONFIGS = [  # (label, spec, rescore, query treatment)
    ("float", "float", None, "float query"),
    ("int8", "int8", None, "float query (asymmetric: FAISS SQ8 scores a float query)"),
    ("binary", "binary", None, "binarized query (symmetric Hamming)"),
    ("binary + rescore x4", "binary", 4, "binarized query, then float query vs float16 vectors"),
    ("mrl:128", "mrl:128", None, "float query (truncated)"),
    ("mrl:128,binary + rescore x4", "mrl:128,binary", 4, "binarized query, then float query vs 128-d float16 vectors"),
]


def anchor_configs(docs, queries):
    """(label, corpus embeddings, corpus precision, query embeddings, rescore, code bytes/vector, query treatment)."""
    from sentence_transformers.util.quantization import quantize_embeddings

    trunc_d = l2_normalize(docs[:, :128])
    trunc_q = l2_normalize(queries[:, :128])
    return [
        ("float32", lambda: docs, "float32", queries, False, 4 * docs.shape[1], "float query"),
        ("uint8 (calibrated on corpus)", lambda: quantize_embeddings(docs, "uint8", calibration_embeddings=docs), "uint8",
         queries, False, docs.shape[1], "uint8 query (symmetric)"),
        ("uint8 + rescore x4", lambda: quantize_embeddings(docs, "uint8", calibration_embeddings=docs), "uint8", queries,
         True, docs.shape[1], "uint8 query, then float query vs the uint8 codes"),
        ("ubinary", lambda: quantize_embeddings(docs, "ubinary"), "ubinary", queries, False, docs.shape[1] // 8,
         "binarized query (symmetric Hamming)"),
        ("ubinary + rescore x4", lambda: quantize_embeddings(docs, "ubinary"), "ubinary", queries, True,
         docs.shape[1] // 8, "binarized query, then float query vs the unpacked bits (no extra bytes)"),
        ("truncate 128 float32", lambda: trunc_d, "float32", trunc_q, False, 4 * 128, "float query (truncated)"),
        ("truncate 128 ubinary + rescore x4", lambda: quantize_embeddings(trunc_d, "ubinary"), "ubinary", trunc_q, True,
         128 // 8, "binarized query, then float query vs the unpacked bits"),
    ]


def run_anchor(label, make_corpus, precision, Q, rescore, bpv, query_treatment, docs, doc_ids, q_ids, qrels):
    from sentence_transformers.util.quantization import semantic_search_faiss

    kw = dict(corpus_precision=precision, rescore=rescore, rescore_multiplier=4, exact=True)
    if precision == "uint8":
        kw["calibration_embeddings"] = docs
    t = time.perf_counter()
    corpus = make_corpus()
    results, _, index = semantic_search_faiss(Q, corpus_embeddings=corpus, top_k=100, output_index=True, **kw)
    build_s = time.perf_counter() - t  # includes one full search; reported as such
    # without rescoring, ubinary "scores" are Hamming distances (lower = closer): negate to rank
    sign = -1.0 if precision == "ubinary" and not rescore else 1.0
    run = {q: {doc_ids[h["corpus_id"]]: sign * h["score"] for h in hits} for q, hits in zip(q_ids, results)}

    def search(q, k):
        return semantic_search_faiss(q, corpus_index=index, top_k=k, **kw)

    lat = measure_latency(search, Q, k=10)
    return {"system": "anchor (sentence-transformers)", "config": label, **retrieval_scores(run, qrels), **lat,
            "bytes_per_vector": bpv, "code_bytes_per_vector": bpv, "rescore_bytes_per_vector": 0,
            "query": query_treatment, "build_plus_one_search_seconds": build_s}


def run_anchor_float_rescore(docs, Q, doc_ids, q_ids, qrels, dims=None, store="float32"):
    """What a user adds to the sentence-transformers path to rescore with stored float vectors: ubinary
    candidates (4 x 100) from FAISS, re-ranked by the float query against float32 (or float16) corpus
    vectors kept beside the index — the same extra bytes embedkit's rescoring keeps."""
    from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss

    D = docs if dims is None else l2_normalize(docs[:, :dims])
    Qd = Q if dims is None else l2_normalize(Q[:, :dims])
    V = D.astype(np.float16 if store == "float16" else np.float32)
    codes = quantize_embeddings(D, "ubinary")
    kw = dict(corpus_precision="ubinary", rescore=False, exact=True)
    results, _, index = semantic_search_faiss(Qd, corpus_embeddings=codes, top_k=400, output_index=True, **kw)
    run = {}
    for qi, (q, hits) in enumerate(zip(q_ids, results)):
        cand = np.array([h["corpus_id"] for h in hits])
        s = V[cand].astype(np.float32) @ Qd[qi]
        order = np.argsort(-s, kind="stable")[:100]
        run[q] = {doc_ids[int(cand[j])]: float(s[j]) for j in order}

    def search(q, k):
        res = semantic_search_faiss(q, corpus_index=index, top_k=4 * k, **kw)[0]
        return [sorted(((float(V[h["corpus_id"]].astype(np.float32) @ qq), h["corpus_id"]) for h in hits), reverse=True)[:k]
                for qq, hits in zip(q, res)]

    lat = measure_latency(search, Qd, k=10)
    d = D.shape[1]
    rb = (2 if store == "float16" else 4) * d
    label = f"{'truncate 128 ' if dims else ''}ubinary + {store} rescoring vectors x4"
    return {"system": "anchor (sentence-transformers)", "config": label, **retrieval_scores(run, qrels), **lat,
            "bytes_per_vector": d // 8, "code_bytes_per_vector": d // 8, "rescore_bytes_per_vector": rb,
            "query": "binarized query, then float query vs stored float vectors"}


def run_embedkit(label, spec, rescore, query_treatment, docs, doc_ids, Q, q_ids, qrels, tmp):
    t = time.perf_counter()
    idx = EmbeddingIndex.build([f"doc {i}" for i in doc_ids], doc_ids, spec=spec, rescore=rescore, embeddings=docs, show_progress=False)
    build_s = time.perf_counter() - t
    path = os.path.join(tmp, spec.replace(":", "_").replace(",", "+") + f"-r{rescore}")
    idx.save(path)
    scores, ids = idx.search_ids(Q, 100)
    lat = measure_latency(lambda q, k: idx.search_embeddings(q, k), Q, k=10)
    return {"system": "embedkit", "config": label, "spec": spec, "rescore": rescore,
            **retrieval_scores(run_from_search(q_ids, ids, scores), qrels), **lat,
            "bytes_per_vector": idx.bytes_per_vector, "code_bytes_per_vector": idx.bytes_per_vector,
            "rescore_bytes_per_vector": idx.rescore_bytes_per_vector, "query": query_treatment, "build_seconds": build_s,
            "index_bytes_without_docs_and_rescore": directory_size(path, exclude=("docs.sqlite", "rescore.f16.npy"))}


def synthetic(n: int, dim: int = 384, nq: int = 200, seed: int = 0):
    from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss

    rng = np.random.default_rng(seed)
    # clustered unit vectors (a little structure, like real embeddings)
    centers = rng.standard_normal((256, dim)).astype(np.float32)
    X = l2_normalize(centers[rng.integers(0, 256, n)] + 0.8 * rng.standard_normal((n, dim)).astype(np.float32))
    Q = l2_normalize(X[rng.integers(0, n, nq)] + 0.3 * rng.standard_normal((nq, dim)).astype(np.float32))
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        texts = [f"synthetic document {i}" for i in range(n)]
        for spec in ("float", "binary"):
            t = time.perf_counter()
            idx = EmbeddingIndex.build(texts, spec=spec, embeddings=X, show_progress=False)
            build_s = time.perf_counter() - t
            path = os.path.join(tmp, spec)
            idx.save(path)
            lat = measure_latency(lambda q, k, idx=idx: idx.search_embeddings(q, k), Q, k=10)
            out.append({"system": "embedkit", "config": f"{spec} flat", "n": n, **lat, "build_seconds": build_s,
                        "index_faiss_bytes": os.path.getsize(os.path.join(path, "index.faiss")),
                        "bytes_per_vector": idx.bytes_per_vector})
            del idx
        for precision, corpus in (("float32", X), ("ubinary", quantize_embeddings(X, "ubinary"))):
            kw = dict(corpus_precision=precision, rescore=False, exact=True)
            _, _, index = semantic_search_faiss(Q[:1], corpus_embeddings=corpus, top_k=10, output_index=True, **kw)
            lat = measure_latency(lambda q, k, index=index, kw=kw: semantic_search_faiss(q, corpus_index=index, top_k=k, **kw),
                                  Q, k=10)
            out.append({"system": "anchor (sentence-transformers)", "config": f"{precision} flat", "n": n, **lat})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-n", type=int, default=200_000)
    ap.add_argument("--skip-synthetic", action="store_true")
    args = ap.parse_args()

    ds, doc_ids, docs, q_ids, queries, _ = common.scifact()
    docs, queries = l2_normalize(docs), l2_normalize(queries)
    qrels = {q: ds.qrels[q] for q in q_ids}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, spec, rescore, treatment in EMBEDKIT_CONFIGS:
            rows.append(run_embedkit(label, spec, rescore, treatment, docs, doc_ids, queries, q_ids, qrels, tmp))
            print(f"embedkit {label:<32} nDCG@10 {rows[-1]['ndcg@10']:.4f}", file=sys.stderr)
    for cfg in anchor_configs(docs, queries):
        rows.append(run_anchor(*cfg, docs, doc_ids, q_ids, qrels))
        print(f"anchor   {cfg[0]:<32} nDCG@10 {rows[-1]['ndcg@10']:.4f}", file=sys.stderr)
    for dims, store in ((None, "float16"), (None, "float32"), (128, "float16")):
        rows.append(run_anchor_float_rescore(docs, queries, doc_ids, q_ids, qrels, dims=dims, store=store))
        print(f"anchor   {rows[-1]['config']:<32} nDCG@10 {rows[-1]['ndcg@10']:.4f}", file=sys.stderr)

    by = {(r["system"].split()[0], r["config"]): r for r in rows}
    f_ek, f_an = by[("embedkit", "float")]["ndcg@10"], by[("anchor", "float32")]["ndcg@10"]
    br = by[("embedkit", "binary + rescore x4")]["ndcg@10"]
    fr16 = by[("anchor", "ubinary + float16 rescoring vectors x4")]["ndcg@10"]
    targets = {
        "binary + rescore vs anchor with the same float16 rescoring vectors (same bytes)": {
            "embedkit": br, "anchor": fr16, "met": br >= fr16 - 0.001},
        "float nDCG@10 equals anchor (+-0.001)": {"embedkit": f_ek, "anchor": f_an, "met": abs(f_ek - f_an) <= 0.001},
        "binary + rescore >= 99% of float nDCG@10": {"ratio": br / f_ek, "met": br >= 0.99 * f_ek},
        "binary + rescore above anchor ubinary + rescore": {
            "embedkit": br, "anchor": by[("anchor", "ubinary + rescore x4")]["ndcg@10"],
            "met": br > by[("anchor", "ubinary + rescore x4")]["ndcg@10"]},
    }
    synth = []
    if not args.skip_synthetic:
        synth = synthetic(args.synthetic_n)
        sb = {(r["system"].split()[0], r["config"]): r for r in synth}
        fl, bi = sb[("embedkit", "float flat")], sb[("embedkit", "binary flat")]
        targets["binary flat single-query latency >= 15x lower than float flat (200k)"] = {
            "ratio": fl["p50_ms"] / bi["p50_ms"], "met": fl["p50_ms"] / bi["p50_ms"] >= 15}
        targets["binary index bytes <= 1/25 of float (no rescore vectors)"] = {
            "ratio": bi["index_faiss_bytes"] / fl["index_faiss_bytes"], "met": bi["index_faiss_bytes"] * 25 <= fl["index_faiss_bytes"]}
    common.write_results("retrieval", {"dataset": "scifact test (5183 docs, 300 queries)", "model": "all-MiniLM-L6-v2",
                                       "scifact": rows, "synthetic": synth, "targets": targets})
    print(f"\n{'system':<10}{'config':<44}{'nDCG@10':>9}{'R@100':>8}{'code B':>7}{'resc B':>7}{'p50 ms':>9}{'QPS':>9}")
    for r in rows:
        print(f"{r['system'].split()[0]:<10}{r['config']:<44}{r['ndcg@10']:>9.4f}{r['recall@100']:>8.4f}"
              f"{r['code_bytes_per_vector']:>7}{r['rescore_bytes_per_vector']:>7}{r['p50_ms']:>9.3f}{r['batch_qps']:>9.0f}")
    for r in synth:
        print(f"synthetic {r['n']}: {r['system'].split()[0]:<9}{r['config']:<14} p50 {r['p50_ms']:.3f} ms  QPS {r['batch_qps']:.0f}")
    for name, t in targets.items():
        print(f"[{'MET' if t['met'] else 'MISSED'}] {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in t.items() if k != "met"))


if __name__ == "__main__":
    main()
