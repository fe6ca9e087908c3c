"""Compression sweep on SciFact: every method at matched bytes per vector, with and without rescoring.

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/compression.py [--fit-extra 20000]

Writes bench/results/compression.json and compression.png (nDCG@10 vs bytes per vector, no
rescoring) and compression_rescored.png. Every learned codec (PQ, OPQ, ITQ, LSH, RaBitQ, BEBR) is
fitted on the same set: the 5,183 SciFact corpus vectors plus SciFact's train queries and
``--fit-extra`` seeded sentences from ``unlabeled/`` (Reuters + Wikipedia), all encoded by the same
model, so that codecs see query-like and document-like text (queries and documents differ in
distribution) and none is fitted on the test queries. BEBR, like PQ, is unsupervised and
embedding-to-embedding (no judgements). The anchors outside embedkit (sentence-transformers'
ubinary) need no fitting.

A second measurement times search at scale: 200,000 codes (SciFact corpus vectors resampled with
small noise), 300 queries, k=100, one thread budget for all: BEBR's symmetric (SDC) popcount search
and its float-query (ADC) search against FAISS ``IndexPQ`` ADC at the same 48 code bytes.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import random
import sys
import warnings

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from common import RESULTS, data_dir, scifact, scifact_dir, timed, write_results  # noqa: E402

ANCHORS = ("st-ubinary", "pq", "opq", "rabitq")

BUDGETS = (16, 24, 48, 96, 192)
# BEBR: (planes, width) per budget; width*planes/8 bytes
BEBR_SHAPES = {16: (1, 128), 24: (1, 192), 48: (1, None), 96: (2, None), 192: (4, None)}


def ubinary_anchor(docs):
    """sentence-transformers' sign binary: quantize_embeddings(..., "ubinary") + IndexBinaryFlat."""
    import faiss
    from sentence_transformers.quantization import quantize_embeddings

    codes = quantize_embeddings(docs, "ubinary")
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)

    def search(Q, k):
        D, rows = index.search(quantize_embeddings(Q, "ubinary"), k)
        return (-D).astype(np.float32), rows.astype(np.int64)

    return codes.shape[1], search


def methods(budgets=BUDGETS):
    from embedkit.evaluation.sweep import SweepMethod as M

    out = [M("float", "float"), M("st-ubinary", build=ubinary_anchor, label="quantize_embeddings ubinary")]
    out += [M("lsh", f"lsh:{8 * b}") for b in budgets]
    out += [M("itq", f"itq:{8 * b}") for b in budgets if 8 * b <= 384]
    out += [M("pq", f"pq:{b}x8") for b in budgets]
    out += [M("opq", f"opq:{b}x8") for b in (16, 48, 96) if b in budgets]  # OPQ training is ~100 s per budget here
    bits = (1, 2, 3, 4) if set(budgets) == set(BUDGETS) else tuple(b // 48 for b in budgets if b % 48 == 0)
    out += [M("rabitq", f"rabitq:{n}") for n in bits]  # n bits per dimension: 48 n + 8 bytes
    for b in budgets:
        u, w = BEBR_SHAPES[b]
        spec = f"bebr:{u}" + (f"x{w}" if w else "")
        out += [M("bebr", spec, {"show_progress": False}), M("bebr-adc", spec, {"show_progress": False}, {"scoring": "adc"})]
        out += [M("bebr-untrained", spec, {"epochs": 0}, label=spec + " epochs=0")]
    return out


def targets(rows, float_ndcg, speed, budgets=BUDGETS):
    def get(method, nbytes, rescore=False):
        # matched on code bytes: BEBR's SDC index also stores one float32 per document ("bytes")
        r = [x for x in rows if x["method"] == method and x.get("code_bytes", x["bytes"]) == nbytes
             and x["rescore"] == rescore]
        return r[0] if r else None

    from embedkit.evaluation.sweep import pareto_front

    out = []
    # symmetric BEBR (both sides binary) against the other Hamming methods
    b48 = get("bebr", 48)
    rivals = {"st-ubinary": get("st-ubinary", 48), "itq:384": get("itq", 48)}
    out.append({"target": "symmetric BEBR (SDC) at 48 code bytes above sign binary and ITQ, no rescoring",
                "met": all(v is not None and b48["ndcg@10"] > v["ndcg@10"] for v in rivals.values()),
                "bebr": b48["ndcg@10"], "stored_bytes": b48["bytes"],
                "rivals": {k: (v["ndcg@10"] if v else None) for k, v in rivals.items()}})
    for variant in ("bebr", "bebr-adc"):
        b96 = get(variant, 96)
        out.append({"target": f"{variant} at 96 code bytes keeps >= 97% of float nDCG@10 without rescoring",
                    "met": b96["ndcg@10"] >= 0.97 * float_ndcg, "bebr": b96["ndcg@10"],
                    "ratio": round(b96["ndcg@10"] / float_ndcg, 4)})
    # float-query BEBR against the other asymmetric methods
    a48 = get("bebr-adc", 48)
    rivals = {"pq:48x8": get("pq", 48), "opq:48x8": get("opq", 48), "rabitq:1 (56 B)": get("rabitq", 56)}
    out.append({"target": "BEBR ADC (float query) at 48 B vs the asymmetric methods PQ, OPQ, RaBitQ (report)",
                "met": all(v is not None and a48["ndcg@10"] > v["ndcg@10"] for v in rivals.values()),
                "bebr-adc": a48["ndcg@10"], "rivals": {k: (v["ndcg@10"] if v else None) for k, v in rivals.items()}})
    for variant in ("bebr", "bebr-adc"):
        on_front = []
        for b in budgets:
            mine = get(variant, b)
            pts = [(r["bytes"], r["ndcg@10"]) for r in rows if r["method"] in ("pq", "opq", "rabitq") and not r["rescore"]]
            pts.append((mine["bytes"], mine["ndcg@10"]))
            if len(pts) - 1 in pareto_front(pts):
                on_front.append(b)
        out.append({"target": f"{variant} on the Pareto front vs PQ/OPQ/RaBitQ at >= 2 of {len(budgets)} budgets",
                    "met": len(on_front) >= 2, "budgets_on_front": on_front})
    if speed:
        out.append({"target": f"BEBR SDC search no slower than FAISS PQ ADC at 48 code bytes on {speed['n_codes']:,} codes",
                    "met": speed["bebr_sdc_ms_per_query"] <= speed["pq_adc_ms_per_query"],
                    "ratio_pq_over_sdc": round(speed["pq_adc_ms_per_query"] / speed["bebr_sdc_ms_per_query"], 3),
                    **{k: v for k, v in speed.items() if k.endswith("_ms_per_query")}})
    return out


def fit_set(model, docs, extra_n: int, seed: int = 0):
    """Corpus vectors + SciFact train queries + ``extra_n`` seeded unlabelled sentences (encoded, cached)."""
    from embedkit.cache import encode_cached
    from embedkit.data import read_beir

    train = read_beir(scifact_dir(), split="train")
    _, tq = train.judged_queries()
    sentences = []
    for name in ("wiki1m_head.txt.gz", "reuters21578_sentences.txt.gz"):
        with gzip.open(data_dir() / "unlabeled" / name, "rt", encoding="utf-8") as f:
            sentences += [line.strip() for line in f if line.strip()]
    random.Random(seed).shuffle(sentences)
    extra = sentences[:extra_n]
    parts = [docs, encode_cached(model, tq, desc="scifact train queries")]
    if extra:
        parts.append(encode_cached(model, extra, desc="unlabeled sentences"))
    return np.concatenate(parts).astype(np.float32), {"corpus": len(docs), "train_queries": len(tq), "unlabeled": len(extra)}


def speed_at_scale(bebr_pipe, fit_vectors, docs, queries, n=200_000, k=100, seed=0):
    """ms/query of BEBR SDC and ADC vs FAISS IndexPQ ADC (48 code bytes) on ``n`` resampled corpus vectors."""
    import faiss

    rng = np.random.default_rng(seed)
    X = docs[rng.integers(0, len(docs), n)] + rng.normal(0, 0.02, (n, docs.shape[1])).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    codes = bebr_pipe.transform(X)
    sdc = bebr_pipe.quantizer.new_index("flat")
    sdc.add(codes)
    adc = bebr_pipe.quantizer.new_index("flat", scoring="adc")
    adc.add(codes)
    tq = bebr_pipe.transform(queries)
    pq = faiss.IndexPQ(docs.shape[1], 48, 8, faiss.METRIC_INNER_PRODUCT)
    pq.train(fit_vectors)
    pq.add(X)
    out = {"n_codes": n, "queries": len(queries), "k": k, "code_bytes": 48, "threads": faiss.omp_get_max_threads()}
    for key, index, Q in (("bebr_sdc", sdc, tq), ("bebr_adc", adc, queries), ("pq_adc", pq, queries)):
        out[f"{key}_ms_per_query"] = round(1000 * timed(index.search, Q, k, repeat=2)[1] / len(queries), 4)
    return out


def main():
    from embedkit.evaluation.sweep import plot, sweep

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit-extra", type=int, default=20000, help="unlabelled sentences added to every codec's fitting set")
    ap.add_argument("--speed-n", type=int, default=200_000, help="codes in the search-speed measurement")
    ap.add_argument("--fit-on", choices=("extended", "corpus"), default="extended",
                    help="extended: corpus + train queries + --fit-extra sentences; corpus: the 5,183 corpus vectors only")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="bytes per vector to sweep")
    ap.add_argument("--name", default="compression", help="results name (bench/results/NAME.json and .png)")
    args = ap.parse_args()
    budgets = tuple(int(b) for b in args.budgets.split(","))
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ds, doc_ids, docs, q_ids, queries, model = scifact()
    if args.fit_on == "corpus":
        fit_vectors, fit_counts = docs, {"corpus": len(docs), "train_queries": 0, "unlabeled": 0}
    else:
        fit_vectors, fit_counts = fit_set(model, docs, args.fit_extra)
    qrels = {q: dict(v) for q, v in ds.qrels.items()}
    cache = {}
    rows = sweep(methods(budgets), docs, queries, doc_ids, q_ids, qrels, k=100, oversample=4, cache=cache, fit_vectors=fit_vectors)
    float_ndcg = next(r["ndcg@10"] for r in rows if r["method"] == "float" and not r["rescore"])
    speed = None
    if args.speed_n:
        bebr48 = cache[("bebr:1", (("show_progress", "False"),))][0]
        speed = speed_at_scale(bebr48, fit_vectors, docs, queries, n=args.speed_n)
        print("search speed at scale:", speed)
    tg = targets(rows, float_ndcg, speed, budgets)
    for t in tg:
        print(("MET    " if t["met"] else "MISSED ") + t["target"], {k: v for k, v in t.items() if k not in ("target", "met")})
    fitted = ("the corpus only" if args.fit_on == "corpus" else
              f"corpus + {fit_counts['train_queries']} train queries + {fit_counts['unlabeled']:,} unlabelled sentences")
    caption = (f"SciFact test, full corpus (5,183 docs, 300 queries), all-MiniLM-L6-v2. Codecs fitted on {fitted}. "
               "Anchors (other libraries): sentence-transformers ubinary, FAISS PQ/OPQ/RaBitQ. "
               "bebr = symmetric (binary query), bebr-adc = float query. x = bytes stored per vector.")
    plot(rows, RESULTS / f"{args.name}.png", rescore=False, float_ndcg=float_ndcg, anchors=ANCHORS, caption=caption,
         title="SciFact, default model: nDCG@10 vs bytes/vector (no rescoring)")
    plot(rows, RESULTS / f"{args.name}_rescored.png", rescore=True, float_ndcg=float_ndcg, anchors=ANCHORS,
         caption=caption, title="SciFact, default model: nDCG@10 vs bytes/vector (float rescoring of top 400)")
    write_results(args.name, {
        "dataset": "scifact test (5183 docs, 300 queries)", "model": str(getattr(model, "name", model)),
        "command": "python bench/compression.py " + " ".join(sys.argv[1:]),
        "protocol": f"all learned codecs fitted on the same set ({fitted}; no test queries); flat indexes; k=100; rescoring = exact float inner product over the top 400 "
                    "candidates; search time = best of 2, 300 queries, 2 cores",
        "fit_set": fit_counts, "float_ndcg@10": float_ndcg, "rows": rows, "targets": tg, "speed_at_scale": speed,
    })


if __name__ == "__main__":
    main()
