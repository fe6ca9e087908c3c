"""Compression sweep on SciFact: every method at matched bytes per vector, with and without rescoring.

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/compression.py

Writes bench/results/compression.json and compression.png (nDCG@10 vs bytes per vector, no
rescoring) and compression_rescored.png. All learned codecs (PQ, OPQ, ITQ, BEBR) are fitted on
the 5,183 SciFact corpus vectors they then compress: BEBR, like PQ, is unsupervised and
embedding-to-embedding (no queries, no judgements), so this is the same protocol for all.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from common import RESULTS, scifact, write_results  # noqa: E402

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


def methods():
    from embedkit.evaluation.sweep import SweepMethod as M

    out = [M("float", "float"), M("st-ubinary", build=ubinary_anchor, label="quantize_embeddings ubinary")]
    out += [M("lsh", f"lsh:{8 * b}") for b in BUDGETS]
    out += [M("itq", f"itq:{8 * b}") for b in BUDGETS if 8 * b <= 384]
    out += [M("pq", f"pq:{b}x8") for b in BUDGETS]
    out += [M("opq", f"opq:{b}x8") for b in (16, 48, 96)]  # OPQ training is ~100 s per budget here
    out += [M("rabitq", f"rabitq:{bits}") for bits in (1, 2, 3, 4)]
    for b in BUDGETS:
        u, w = BEBR_SHAPES[b]
        spec = f"bebr:{u}" + (f"x{w}" if w else "")
        out += [M("bebr", spec, {"show_progress": False}), M("bebr-adc", spec, {"show_progress": False}, {"scoring": "adc"})]
        out += [M("bebr-untrained", spec, {"epochs": 0}, label=spec + " epochs=0")]
    return out


def targets(rows, float_ndcg):
    def get(method, nbytes, rescore=False):
        # matched on code bytes: BEBR's SDC index also stores one float32 per document ("bytes")
        r = [x for x in rows if x["method"] == method and x.get("code_bytes", x["bytes"]) == nbytes
             and x["rescore"] == rescore]
        return r[0] if r else None

    from embedkit.evaluation.sweep import pareto_front

    out = []
    for variant in ("bebr", "bebr-adc"):
        b48 = get(variant, 48)
        rivals = {"st-ubinary": get("st-ubinary", 48), "itq:384": get("itq", 48), "rabitq:1 (56 B)": get("rabitq", 56)}
        beats = {k: (v is not None and b48["ndcg@10"] > v["ndcg@10"]) for k, v in rivals.items()}
        out.append({"target": f"{variant} at 48 B beats sign binary, ITQ and RaBitQ without rescoring",
                    "met": all(beats.values()), "bebr": b48["ndcg@10"],
                    "rivals": {k: (v["ndcg@10"] if v else None) for k, v in rivals.items()}})
        b96 = get(variant, 96)
        out.append({"target": f"{variant} at 96 B keeps >= 98% of float nDCG@10 without rescoring",
                    "met": b96["ndcg@10"] >= 0.98 * float_ndcg, "bebr": b96["ndcg@10"],
                    "ratio": round(b96["ndcg@10"] / float_ndcg, 4)})
        on_front = []
        for b in BUDGETS:
            mine = get(variant, b)
            pts = [(r["bytes"], r["ndcg@10"]) for r in rows if r["method"] in ("pq", "opq", "rabitq") and not r["rescore"]]
            pts.append((mine["bytes"], mine["ndcg@10"]))
            if len(pts) - 1 in pareto_front(pts):
                on_front.append(b)
        out.append({"target": f"{variant} on the Pareto front vs PQ/OPQ/RaBitQ at >= 2 of 5 budgets",
                    "met": len(on_front) >= 2, "budgets_on_front": on_front})
        faster = {b: (get(variant, b)["search_ms_per_query"], get("pq", b)["search_ms_per_query"]) for b in BUDGETS}
        out.append({"target": f"{variant} search faster than PQ at equal bytes (no rescoring)",
                    "met": all(m < p for m, p in faster.values()),
                    "ms_per_query_bebr_vs_pq": {str(b): v for b, v in faster.items()}})
    return out


def main():
    from embedkit.evaluation.sweep import plot, sweep

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ds, doc_ids, docs, q_ids, queries, model = scifact()
    qrels = {q: dict(v) for q, v in ds.qrels.items()}
    rows = sweep(methods(), docs, queries, doc_ids, q_ids, qrels, k=100, oversample=4)
    float_ndcg = next(r["ndcg@10"] for r in rows if r["method"] == "float" and not r["rescore"])
    tg = targets(rows, float_ndcg)
    for t in tg:
        print(("MET    " if t["met"] else "MISSED ") + t["target"], {k: v for k, v in t.items() if k not in ("target", "met")})
    plot(rows, RESULTS / "compression.png", rescore=False, float_ndcg=float_ndcg,
         title="SciFact, default model: nDCG@10 vs bytes/vector (no rescoring)")
    plot(rows, RESULTS / "compression_rescored.png", rescore=True, float_ndcg=float_ndcg,
         title="SciFact, default model: nDCG@10 vs bytes/vector (float rescoring of top 400)")
    write_results("compression", {
        "dataset": "scifact test (5183 docs, 300 queries)", "model": str(getattr(model, "name", model)),
        "protocol": "all codecs fitted on the corpus vectors; flat indexes; k=100; rescoring = exact float "
                    "inner product over the top 400 candidates; search time = best of 2, 300 queries, 2 cores",
        "float_ndcg@10": float_ndcg, "rows": rows, "targets": tg,
    })


if __name__ == "__main__":
    main()
