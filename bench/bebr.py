"""BEBR on two retrieval collections: trained vs untrained at every size, each loss term alone, the
symmetric score, and Hamming-speed SDC against FAISS IndexPQ ADC.

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/bebr.py [--fit-extra 20000] [--quick]

Collections (both encoded with the default model, cached):

* **SciFact** test (5,183 abstracts, 300 queries), the protocol of ``bench/compression.py``: every codec
  fitted on the corpus + SciFact's train queries + ``--fit-extra`` unlabelled sentences.
* **Paraphrase retrieval** built from STS-B test and SICK-R test (no training split is used): every
  pair scored >= 4 gives a query (sentence 1) and its one relevant document (sentence 2); the corpus
  is every second sentence of both files. Codecs fitted on that corpus + the same unlabelled sentences.
  Short, general-domain text: a different distribution from SciFact's biomedical abstracts.

Rows (nDCG@10, no rescoring): float; the anchors sentence-transformers ``ubinary`` and ITQ (embedkit's
``itq``) at the same bits; FAISS PQ ADC at 48 B; BEBR untrained (``epochs=0``: ITQ start + greedy
residual planes) and trained, SDC (binary query) and ADC (float query), at 16/24/48/96/192 code bytes;
at 48 and 96 B each loss term alone and the default objective; the symmetric score centred vs decoded.
The training picks its epoch on held-out fitting vectors (recorded per row as ``chosen_epoch``).
On SciFact BEBR is also given the train qrels' (query, relevant abstract) vectors as ``fit(pairs=...)``
(919 pairs; ``--no-fit-pairs`` turns this off): its query-document InfoNCE, and the held-out pairs'
recall in the selection. The other codecs do not learn from pairs.
Speed: 200,000 codes, 300 queries, k=100: BEBR SDC at 48 B (one plane: FAISS ``IndexBinaryFlat``)
against FAISS ``IndexPQ`` ADC at 48 B, best of 3, same threads. Writes bench/results/bebr.json.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from common import RESULTS, data_dir, load_average, scifact, scifact_dir, timed, write_results  # noqa: E402
from compression import BEBR_SHAPES, fit_set, ubinary_anchor  # noqa: E402

SIZES = (16, 24, 48, 96, 192)
ABLATION_SIZES = (48, 96)
OFF = {"recon_weight": 0.0, "distill_weight": 0.0, "nce_weight": 0.0, "pair_weight": 0.0}
#: the loss-term ablation: each term alone (the others' weights 0), and all four on
TERMS = {"recon only": {**OFF, "recon_weight": 1.0},
         "distill only": {**OFF, "distill_weight": 1.0},
         "infonce only": {**OFF, "nce_weight": 1.0},
         "pairs only": {**OFF, "pair_weight": 1.0},
         "all terms": {"nce_weight": 1.0}}


def memoize_itq():
    """Every BEBR fit of a collection starts from the same ITQ (same vectors, width, seed): fit it once.

    Only the bench does this (BEBR's own fit is unchanged); the fit times in the rows then exclude ITQ
    after the first fit of each width."""
    import hashlib

    from embedkit.compression.itq import ITQQuantizer

    real_fit, cache = ITQQuantizer.fit, {}

    def fit(self, X):
        X = np.ascontiguousarray(X, dtype=np.float32)
        key = (hashlib.sha1(X.tobytes()).hexdigest(), self.nbits, self.n_iter, self.seed)
        if key not in cache:
            cache[key] = real_fit(self, X).__dict__.copy()
        self.__dict__.update(cache[key])
        return self

    ITQQuantizer.fit = fit


def paraphrase_collection(model):
    """(doc_ids, docs, q_ids, queries, qrels, corpus texts) from STS-B test + SICK-R test pairs scored >= 4."""
    from embedkit.cache import encode_cached

    docs_t, queries, qrels = {}, {}, {}
    for name in ("stsb.test.tsv", "sickr.test.tsv"):
        with open(data_dir() / "sts" / name, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        for score, s1, s2 in rows:
            did = docs_t.setdefault(s2, f"d{len(docs_t)}")
            if float(score) >= 4.0 and s1 != s2 and s1 not in queries:
                queries[s1] = f"q{len(queries)}"
                qrels[queries[s1]] = {did: 1}
    doc_texts = list(docs_t)
    q_texts = list(queries)
    D = encode_cached(model, doc_texts, desc="paraphrase corpus")
    Q = encode_cached(model, q_texts, desc="paraphrase queries")
    return [docs_t[t] for t in doc_texts], D, [queries[t] for t in q_texts], Q, qrels


def methods(sizes, ablation_sizes, extra, with_pairs=False):
    from embedkit.evaluation.sweep import SweepMethod as M

    quiet = {"show_progress": False, **extra}
    out = [M("float", "float"), M("st-ubinary", build=ubinary_anchor, label="quantize_embeddings ubinary"),
           M("itq", "itq:384"), M("pq-adc", "pq:48x8")]
    for b in sizes:
        u, w = BEBR_SHAPES[b]
        spec = f"bebr:{u}" + (f"x{w}" if w else "")
        out += [M("bebr-untrained", spec, {**quiet, "epochs": 0}),
                M("bebr-untrained-adc", spec, {**quiet, "epochs": 0}, {"scoring": "adc"}),
                M("bebr", spec, quiet), M("bebr-adc", spec, quiet, {"scoring": "adc"})]
        out += [M("bebr-decoded", spec, quiet, {"symmetric": "decoded"})] if b in (48, 96) else []
        if b in ablation_sizes:
            for term, kw in TERMS.items():
                if term == "pairs only" and not with_pairs:
                    continue
                out += [M(f"bebr {term}", spec, {**quiet, **kw}), M(f"bebr-adc {term}", spec, {**quiet, **kw}, {"scoring": "adc"})]
    return out


def train_pairs(model, doc_ids, docs):
    """SciFact's train qrels as (query vectors, relevant abstract vectors): BEBR's ``fit(pairs=...)``."""
    from embedkit.cache import encode_cached
    from embedkit.data import read_beir

    train = read_beir(scifact_dir(), split="train")
    row = {d: i for i, d in enumerate(doc_ids)}
    pairs = [(train.queries[q], row[d]) for q, rel in train.qrels.items() for d, r in rel.items()
             if r > 0 and q in train.queries and d in row]
    Q = encode_cached(model, [q for q, _ in pairs], desc="scifact train pair queries")
    return np.asarray(Q, dtype=np.float32), docs[[r for _, r in pairs]]


def chosen_epochs(cache) -> dict[str, dict]:
    out = {}
    for (spec, kw, *pairs), (pipe, fit_s) in cache.items():
        q = pipe.quantizer
        if getattr(q, "name", "") == "bebr":
            out[f"{spec} {dict(kw)}" + (" +pairs" if any(pairs) else "")] = {"chosen_epoch": q.selection_.get("chosen_epoch"),
                                         "held_out": q.selection_.get("held_out"),
                                         "epochs_run": len(q.history_), "fit_s": round(fit_s, 1),
                                         "agreement": q.selection_.get("epochs")}
    return out


def speed(cache, fit_vectors, docs, queries, n, k=100, seed=0):
    """ms/query: BEBR SDC at 48 B (one plane, Hamming) vs FAISS IndexPQ ADC at 48 B on ``n`` codes."""
    import faiss

    pipe = next(p for (spec, kw, *_), (p, _) in cache.items() if spec == "bebr:1" and "epochs" not in dict(kw)
                and len(dict(kw)) == 1)
    rng = np.random.default_rng(seed)
    X = docs[rng.integers(0, len(docs), n)] + rng.normal(0, 0.02, (n, docs.shape[1])).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sdc = pipe.quantizer.new_index("flat")
    sdc.add(pipe.transform(X))
    pq = faiss.IndexPQ(docs.shape[1], 48, 8, faiss.METRIC_INNER_PRODUCT)
    pq.train(fit_vectors)
    pq.add(X)
    tq = pipe.transform(queries)
    out = {"n_codes": n, "queries": len(queries), "k": k, "code_bytes": 48, "threads": faiss.omp_get_max_threads()}
    for _ in range(2):  # alternate, best of 3 each
        out["bebr_sdc_ms_per_query"] = round(1000 * timed(sdc.search, tq, k, repeat=3)[1] / len(queries), 4)
        out["pq_adc_ms_per_query"] = round(1000 * timed(pq.search, queries, k, repeat=3)[1] / len(queries), 4)
    out["ratio_pq_over_sdc"] = round(out["pq_adc_ms_per_query"] / out["bebr_sdc_ms_per_query"], 2)
    return out


def targets(rows, float_ndcg):
    def get(method, nbytes):
        r = [x for x in rows if x["method"] == method and x["code_bytes"] == nbytes and not x["rescore"]]
        return r[0]["ndcg@10"] if r else None

    out = []
    sizes = sorted({r["code_bytes"] for r in rows if r["method"] == "bebr"})
    for kind, tr, un in (("SDC", "bebr", "bebr-untrained"), ("ADC", "bebr-adc", "bebr-untrained-adc")):
        pairs = {b: (get(tr, b), get(un, b)) for b in sizes}
        out.append({"target": f"trained >= untrained at every size ({kind})",
                    "met": all(t >= u for t, u in pairs.values()), "trained_vs_untrained": pairs})
    best_hamming = max(get("st-ubinary", 48), get("itq", 48))
    out.append({"target": "48 B SDC >= max(ubinary, ITQ) + 0.005", "met": get("bebr", 48) >= best_hamming + 0.005,
                "bebr": get("bebr", 48), "ubinary": get("st-ubinary", 48), "itq": get("itq", 48)})
    if 96 in sizes:
        out.append({"target": "96 B SDC >= 97% of float", "met": get("bebr", 96) >= 0.97 * float_ndcg,
                    "ratio": round(get("bebr", 96) / float_ndcg, 4)})
    out.append({"target": "48 B ADC >= FAISS PQ ADC at 48 B", "met": get("bebr-adc", 48) >= get("pq-adc", 48),
                "bebr_adc": get("bebr-adc", 48), "pq": get("pq-adc", 48)})
    return out


def run_collection(name, docs, queries, doc_ids, q_ids, qrels, fit_vectors, sizes, ablation_sizes, extra,
                   fit_pairs=None):
    from embedkit.evaluation.sweep import sweep

    cache = {}
    t0 = time.time()
    rows = sweep(methods(sizes, ablation_sizes, extra, fit_pairs is not None), docs, queries, doc_ids, q_ids, qrels,
                 k=100, oversample=4, cache=cache, fit_vectors=fit_vectors, rescore=(False,), fit_pairs=fit_pairs)
    float_ndcg = next(r["ndcg@10"] for r in rows if r["method"] == "float")
    tg = targets(rows, float_ndcg)
    for t in tg:
        print(f"[{name}] " + ("MET    " if t["met"] else "MISSED ") + t["target"],
              {k: v for k, v in t.items() if k not in ("target", "met")}, flush=True)
    return {"float_ndcg@10": float_ndcg, "rows": rows, "targets": tg, "training": chosen_epochs(cache),
            "minutes": round((time.time() - t0) / 60, 1)}, cache


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit-extra", type=int, default=20000)
    ap.add_argument("--speed-n", type=int, default=200_000)
    ap.add_argument("--quick", action="store_true", help="48 and 96 B only, SciFact only")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="SciFact code sizes (bytes)")
    ap.add_argument("--ablation-sizes", default=",".join(map(str, ABLATION_SIZES)), help="sizes with the loss-term ablation")
    ap.add_argument("--paraphrase-sizes", default="48,96", help="code sizes on the paraphrase collection ('' = skip it)")
    ap.add_argument("--epochs", type=int, default=None, help="override BEBR's epochs (default: the codec's)")
    ap.add_argument("--name", default="bebr")
    ap.add_argument("--no-fit-pairs", action="store_true",
                    help="fit BEBR without SciFact's train (query, relevant abstract) pairs")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the search-speed run (run it alone on a quiet machine); adds speed_at_scale to NAME.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = ABLATION_SIZES if args.quick else tuple(int(x) for x in args.sizes.split(","))
    ablation = tuple(int(x) for x in args.ablation_sizes.split(",") if x)
    memoize_itq()
    extra = {} if args.epochs is None else {"epochs": args.epochs}
    ds, doc_ids, docs, q_ids, queries, model = scifact()
    fit_vectors, fit_counts = fit_set(model, docs, args.fit_extra)
    if args.speed_only:
        import json

        from embedkit.compression.spec import quantizer_from_spec

        # search speed does not depend on the weights: the untrained bebr:1 codes, fitted on the same set
        pipe = quantizer_from_spec("bebr:1")
        pipe.quantizer.set_params(epochs=0, show_progress=False)
        pipe.fit(fit_vectors)
        path = RESULTS / f"{args.name}.json"
        out = json.loads(path.read_text()) if path.exists() else {}
        out["speed_at_scale"] = {**speed({("bebr:1", (("show_progress", "False"),)): (pipe, 0.0)}, fit_vectors, docs,
                                        queries, args.speed_n), "load_average": load_average(),
                                 "command": "python bench/bebr.py " + " ".join(sys.argv[1:])}
        print("speed:", out["speed_at_scale"], flush=True)
        write_results(args.name, {k: v for k, v in out.items() if k not in ("benchmark", "machine")})
        return
    qrels = {q: dict(v) for q, v in ds.qrels.items()}
    out = {"command": "python bench/bebr.py " + " ".join(sys.argv[1:]), "load_average_start": load_average(),
           "fit_set": fit_counts, "collections": {}}
    pairs = None if args.no_fit_pairs else train_pairs(model, doc_ids, docs)
    out["fit_pairs"] = 0 if pairs is None else len(pairs[0])
    res, cache = run_collection("scifact", docs, queries, doc_ids, q_ids, qrels, fit_vectors, sizes,
                                ablation, extra, fit_pairs=pairs)
    out["collections"]["scifact"] = res
    if not args.quick and args.paraphrase_sizes:
        p_ids, P, pq_ids, PQ, p_qrels = paraphrase_collection(model)
        extra_vecs = fit_vectors[fit_counts["corpus"] + fit_counts["train_queries"]:]
        res2, _ = run_collection("paraphrase", P, PQ, p_ids, pq_ids, p_qrels, np.concatenate([P, extra_vecs]),
                                 tuple(int(x) for x in args.paraphrase_sizes.split(",")), (), extra)
        res2["data"] = f"STS-B test + SICK-R test pairs scored >= 4: {len(PQ)} queries, {len(P)} documents"
        out["collections"]["paraphrase"] = res2
    out["load_average_end"] = load_average()
    write_results(args.name, out)
    print("wrote", RESULTS / f"{args.name}.json")


if __name__ == "__main__":
    main()
