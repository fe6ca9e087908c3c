"""Length collapse and TempScale on real data: SciFact (long vs short abstracts) and BBC News.

1. Tau search (label-free, ``embedkit.analysis.search_temperature``) on 240 random SciFact abstracts
   over tau in {0.7, 0.8, 0.9, 0.95, 1, 1.05, 1.1}.
2. SciFact retrieval: nDCG@10 on the 300 judged test queries over a corpus subset (every judged
   document + 700 random others, seed 0; re-encoding all 5,183 abstracts per tau takes ~10 min here),
   at tau = 1, at the searched tau and at tau = 0.9, overall and split by the length of the relevant documents;
   plus the full-corpus nDCG@10 at tau = 1 from the cache for reference (MTEB: 0.6451).
3. Collapse measure (mean pairwise cosine of the longest length quartile minus the shortest) and
   per-bucket RankMe at both taus on the SciFact subset and on 400 BBC News articles; for BBC, a
   label-based check that the repair keeps topic structure: leave-one-out 10-NN accuracy.

Run:  flock /tmp/embedkit-cpu.lock .venv/bin/python bench/length_collapse.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from embedkit._io import atomic_write_json, data_dir  # noqa: E402
from embedkit.analysis import fisher_ratio, length_collapse, rankme, search_temperature, token_lengths  # noqa: E402
from embedkit.cache import encode_cached  # noqa: E402
from embedkit.models.tempscale import apply_tempscale, preserved_attention  # noqa: E402
from embedkit.retrieval.metrics import ndcg_at_k  # noqa: E402

TAUS = (1.0, 0.95, 0.9, 0.8, 0.7, 1.05, 1.1)
FIXED_TAU = 0.9  # also evaluated whatever the search picks: what paper-style sharpening does here


def norm(E):
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def ndcg(doc_ids, D, q_ids, Q, qrels, subset_q=None):
    S = norm(Q) @ norm(D).T
    run = {}
    for i, q in enumerate(q_ids):
        if subset_q is not None and q not in subset_q:
            continue
        top = np.argsort(-S[i])[:100]
        run[q] = {doc_ids[j]: float(S[i, j]) for j in top}
    return ndcg_at_k(run, {q: qrels[q] for q in run}, k=10)


def knn_accuracy(E, labels, k=10):
    E = norm(E)
    S = E @ E.T
    np.fill_diagonal(S, -np.inf)
    y = np.asarray(labels)
    nn = np.argsort(-S, axis=1)[:, :k]
    pred = []
    for r in nn:  # majority vote; ties go to the label whose nearest member ranks first (deterministic)
        labs, counts = np.unique(y[r], return_counts=True)
        tied = set(labs[counts == counts.max()])
        pred.append(next(lab for lab in y[r] if lab in tied))
    return float(np.mean(np.asarray(pred) == y))


def main():
    from embedkit.data import read_beir, read_labelled_tsv
    from embedkit.models.loading import load_encoder

    t0 = time.time()
    model = load_encoder()
    enc = lambda texts, desc: encode_cached(model, texts, desc=desc, batch_size=32)  # noqa: E731
    ds = read_beir(data_dir() / "retrieval" / "scifact")
    doc_ids, doc_texts = ds.corpus_texts()
    q_ids, q_texts = ds.judged_queries()
    lengths_all = token_lengths(model, doc_texts)
    rng = np.random.default_rng(0)
    out = {"bench": "length_collapse", "machine": common.machine_info(), "model": "all-MiniLM-L6-v2 (default)",
           "max_seq_length": model.max_seq_length}

    # 1) tau search on unlabelled SciFact abstracts
    search_idx = rng.choice(len(doc_texts), 240, replace=False)
    res = search_temperature(model, [doc_texts[i] for i in search_idx], taus=TAUS, show_progress=True)
    tau = res["best_tau"]
    out["tau_search"] = res
    print(f"searched tau = {tau}", file=sys.stderr)

    # 2) SciFact subset retrieval
    judged = sorted({d for q in q_ids for d in ds.qrels[q]})
    pos = {d: i for i, d in enumerate(doc_ids)}
    others = [i for i in rng.permutation(len(doc_ids)) if doc_ids[i] not in set(judged)][:700]
    sub = sorted({pos[d] for d in judged} | set(others))
    s_ids, s_texts, s_len = [doc_ids[i] for i in sub], [doc_texts[i] for i in sub], lengths_all[sub]
    median_len = float(np.median(s_len))
    len_of = dict(zip(s_ids, s_len))
    q_long = {q for q in q_ids if np.mean([len_of[d] for d in ds.qrels[q]]) >= median_len}
    q_short = set(q_ids) - q_long
    sci = {"n_docs": len(sub), "n_judged_docs": len(judged), "n_queries": len(q_ids), "median_doc_tokens": median_len,
           "n_queries_long_relevant": len(q_long), "n_queries_short_relevant": len(q_short), "per_tau": {}}
    bbc_labels, bbc_texts = read_labelled_tsv(data_dir() / "topics" / "bbc_news" / "docs.tsv.gz")
    bidx = np.random.default_rng(0).choice(len(bbc_texts), 400, replace=False)
    bbc_labels, bbc_texts = [bbc_labels[i] for i in bidx], [bbc_texts[i] for i in bidx]
    bbc_len = token_lengths(model, bbc_texts)
    bbc = {"n_docs": len(bbc_texts), "token_length_quantiles": np.quantile(bbc_len, [0, .25, .5, .75, 1]).tolist(),
           "per_tau": {}}
    with preserved_attention(model) as keep:
        for t in sorted({1.0, tau, FIXED_TAU}, reverse=True):
            keep.reset()
            apply_tempscale(model, t)
            D = enc(s_texts, f"scifact subset tau={t}")
            Q = enc(q_texts, f"scifact queries tau={t}")
            lc = length_collapse(D, s_len, n_buckets=4, min_bucket=30)
            sci["per_tau"][str(t)] = {
                "ndcg@10": ndcg(s_ids, D, q_ids, Q, ds.qrels),
                "ndcg@10_queries_with_long_relevant_docs": ndcg(s_ids, D, q_ids, Q, ds.qrels, q_long),
                "ndcg@10_queries_with_short_relevant_docs": ndcg(s_ids, D, q_ids, Q, ds.qrels, q_short),
                "collapse": lc.collapse, "buckets": lc.buckets, "rankme": rankme(D),
            }
            B = enc(bbc_texts, f"bbc tau={t}")
            lb = length_collapse(B, bbc_len, n_buckets=4, min_bucket=30)
            bbc["per_tau"][str(t)] = {"collapse": lb.collapse, "buckets": lb.buckets, "rankme": rankme(B),
                                      "knn10_accuracy": knn_accuracy(B, bbc_labels),
                                      "fisher_ratio": fisher_ratio(B, bbc_labels)}
            print(f"tau={t}: scifact {sci['per_tau'][str(t)]['ndcg@10']:.4f} collapse {lc.collapse:.4f}; "
                  f"bbc collapse {lb.collapse:.4f} knn {bbc['per_tau'][str(t)]['knn10_accuracy']:.3f}", file=sys.stderr)
    # full corpus at tau = 1 only if it is already cached (the lead pre-encodes it)
    from embedkit.cache import EmbeddingCache, model_namespace

    _, missing = EmbeddingCache().get(model_namespace(model), doc_texts)
    if not missing:
        D = enc(doc_texts, "scifact full")
        Q = enc(q_texts, "scifact queries")
        lf = length_collapse(D, lengths_all, n_buckets=4, min_bucket=30)
        sci["full_corpus_tau1"] = {"ndcg@10": ndcg(doc_ids, D, q_ids, Q, ds.qrels), "collapse": lf.collapse,
                                   "buckets": lf.buckets}
    else:
        sci["full_corpus_tau1"] = f"skipped: {len(missing)} of {len(doc_texts)} abstracts not in the cache"
    out["scifact"] = sci
    out["bbc_news"] = bbc
    out["searched_tau"] = tau
    out["fixed_tau"] = FIXED_TAU
    out["token_length_note"] = ("all-MiniLM-L6-v2 truncates at 256 tokens; lengths are as the model sees them, so most "
                                "SciFact abstracts and BBC articles fall in one capped bucket")
    out["seconds"] = time.time() - t0
    atomic_write_json(common.RESULTS / "length_collapse.json", out)
    print(json.dumps({"tau": tau, "scifact": {k: {m: v[m] for m in ("ndcg@10", "collapse", "ndcg@10_queries_with_long_relevant_docs")}
                                              for k, v in sci["per_tau"].items()},
                      "bbc": {k: {m: v[m] for m in ("collapse", "knn10_accuracy")} for k, v in bbc["per_tau"].items()}},
                     indent=1))


if __name__ == "__main__":
    main()
