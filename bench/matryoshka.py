"""Matryoshka and Starbucks trainers, side by side: one model at every (layers, dims) size.

From the default model (all-MiniLM-L6-v2), the same training pairs, steps, batch size, learning rate
and seed for every trained method:

  (a) naive       no training: first L layers pooled, first D dims (renormalised)
  (b) inner       MultipleNegativesRankingLoss at the full size only
  (c) matryoshka  sentence-transformers' MatryoshkaLoss(MNRL, dims of the ladder)
  (d) 2dmse       sentence-transformers' Matryoshka2dLoss(MNRL, dims of the ladder) — the 2DMSE anchor
  (e) starbucks   embedkit StarbucksLoss(MNRL, the diagonal ladder (1,32) ... (6,384))

Training pairs (never test data): SciFact qrels/train.tsv (query, relevant abstract) and unlabelled
Wikipedia sentences from shared/data/unlabeled as (s, s) pairs (SimCSE-style, dropout views).
For every ladder size: Spearman x100 on STS12-16, STS-B test and SICK-R test and their average;
SciFact test nDCG@10 on a corpus subset (every judged document plus seeded random others);
bytes/vector; encode throughput of the physically truncated sub-model (texts/s, SciFact abstracts);
and mrl:128 on each trained model's full layers. Results: bench/results/matryoshka.json + .png.

    .venv/bin/python bench/matryoshka.py [--steps 150] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402,F401  (sets offline env vars)
import numpy as np  # noqa: E402

from embedkit.data import read_beir, read_sts_tsv  # noqa: E402
from embedkit.evaluation.sts import STANDARD_STS, spearman_cosine  # noqa: E402
from embedkit.models.loading import default_model_path, load_encoder  # noqa: E402
from embedkit.models.submodel import encode_ladder  # noqa: E402
from embedkit.retrieval.metrics import ndcg_at_k  # noqa: E402
from embedkit.training.losses.starbucks import StarbucksLoss, default_ladder  # noqa: E402

METHODS = ("naive", "inner", "matryoshka", "2dmse", "starbucks")


def training_pairs(n_wiki: int, seed: int) -> list[tuple[str, str]]:
    ds = read_beir(common.scifact_dir(), split="train")
    pairs = [(ds.queries[q], (ds.corpus[d].get("title", "") + " " + ds.corpus[d]["text"]).strip())
             for q, rel in ds.qrels.items() for d, r in rel.items() if r > 0 and q in ds.queries and d in ds.corpus]
    with gzip.open(common.data_dir() / "unlabeled" / "wiki1m_head.txt.gz", "rt", encoding="utf-8") as f:
        wiki = [s.strip() for s in f if len(s.split()) >= 5]
    rng = random.Random(seed)
    rng.shuffle(wiki)
    pairs += [(s, s) for s in wiki[:n_wiki]]
    rng.shuffle(pairs)
    return pairs


def train(method: str, pairs, out: str, *, steps: int, batch_size: int, lr: float, seed: int, ladder):
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import (
        Matryoshka2dLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    torch.manual_seed(seed)
    model = load_encoder(device="cpu")
    model.max_seq_length = 64  # training only: short, so every method gets the same cheap steps on a 2-core CPU
    inner = MultipleNegativesRankingLoss(model)
    dims = sorted({d for _, d in ladder}, reverse=True)
    loss = {"inner": lambda: inner,
            "matryoshka": lambda: MatryoshkaLoss(model, inner, dims),
            "2dmse": lambda: Matryoshka2dLoss(model, inner, dims),
            "starbucks": lambda: StarbucksLoss(model, inner, ladder)}[method]()
    data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        warmup_steps=0.1, seed=seed, data_seed=seed, use_cpu=True, report_to=[], save_strategy="no",
        logging_steps=max(1, steps // 5), batch_sampler="no_duplicates", dataloader_drop_last=True)
    t = time.perf_counter()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss).train()
    return model, time.perf_counter() - t


def sts_sets(n_pairs=None):
    """The 7 STS test sets; with ``n_pairs``, the first n pairs of each (a fixed subset, same for every method)."""
    from embedkit.data import StsDataset

    out = {}
    for n in STANDARD_STS:
        ds = read_sts_tsv(common.data_dir() / "sts" / f"{n}.test.tsv")
        if n_pairs:
            ds = StsDataset(ds.name, ds.scores[:n_pairs], ds.sentences1[:n_pairs], ds.sentences2[:n_pairs])
        out[n] = ds
    return out


def evaluate(model, ladder, sets, sci, *, batch_size=64):
    doc_ids, docs, q_ids, queries, qrels = sci
    sentences = sorted({s for ds in sets.values() for s in (*ds.sentences1, *ds.sentences2)})
    index = {s: i for i, s in enumerate(sentences)}
    E = encode_ladder(model, sentences, ladder, batch_size=batch_size)
    model.max_seq_length = 256
    D = encode_ladder(model, docs, ladder, batch_size=32)
    Q = encode_ladder(model, queries, ladder, batch_size=batch_size)
    rows = []
    for size in ladder:
        size = tuple(size)
        per = {}
        for name, ds in sets.items():
            a = E[size][[index[s] for s in ds.sentences1]]
            b = E[size][[index[s] for s in ds.sentences2]]
            per[name] = spearman_cosine(a, b, ds.scores)  # already x100
        S = Q[size] @ D[size].T
        top = np.argsort(-S, axis=1)[:, :100]
        run = {q: {doc_ids[j]: float(S[i, j]) for j in top[i]} for i, q in enumerate(q_ids)}
        rows.append({"layers": size[0], "dims": size[1], "bytes_per_vector": 4 * size[1], "sts": per,
                     "sts_average": float(np.mean(list(per.values()))), "scifact_ndcg10": ndcg_at_k(run, qrels, 10)})
    full = tuple(ladder[-1])
    d128 = D[full][:, :128] / np.linalg.norm(D[full][:, :128], axis=1, keepdims=True)
    q128 = Q[full][:, :128] / np.linalg.norm(Q[full][:, :128], axis=1, keepdims=True)
    S = q128 @ d128.T
    top = np.argsort(-S, axis=1)[:, :100]
    mrl = ndcg_at_k({q: {doc_ids[j]: float(S[i, j]) for j in top[i]} for i, q in enumerate(q_ids)}, qrels, 10)
    return rows, mrl


def throughput(ladder, docs, repeat=2):
    out = []
    for layers, dims in ladder:
        m = load_encoder(device="cpu", layers=layers, dim=dims)
        m.max_seq_length = 256
        m.encode(docs[:32], batch_size=32)  # warm-up
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            m.encode(docs, batch_size=32)
            best = min(best, time.perf_counter() - t)
        out.append({"layers": layers, "dims": dims, "texts_per_s": len(docs) / best})
    full = out[-1]["texts_per_s"]
    for r in out:
        r["speedup"] = r["texts_per_s"] / full
        r["target_speedup"] = 0.8 * ladder[-1][0] / r["layers"]
    return out


def plot(results, path, sts_pairs=1000, scifact_docs=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, res in results.items():
        xs = [f"{r['layers']}L/{r['dims']}d" for r in res["sizes"]]
        style = dict(marker="o", linestyle="--" if method == "naive" else "-", label=method + (" (no training)" if method == "naive" else ""))
        axes[0].plot(xs, [r["sts_average"] for r in res["sizes"]], **style)
        axes[1].plot(xs, [r["scifact_ndcg10"] for r in res["sizes"]], **style)
    axes[0].set_title(f"STS average (STS12-16, STS-B, SICK-R test; first {sts_pairs} pairs each), Spearman x100",
                      fontsize=8)
    axes[1].set_title(f"SciFact test nDCG@10 ({scifact_docs or 'subset of'} docs: judged + random others)", fontsize=8)
    for ax in axes:
        ax.set_xlabel("size (layers / dims)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("all-MiniLM-L6-v2 trained once per method; 2dmse = sentence-transformers Matryoshka2dLoss (anchor)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--n-wiki", type=int, default=4000)
    ap.add_argument("--scifact-docs", type=int, default=1000)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sts-pairs", type=int, default=1000, help="first N pairs of each STS test set (0 = all)")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from bench/results/matryoshka.json")
    a = ap.parse_args()
    if a.plot_only:
        import json

        res = json.loads((common.RESULTS / "matryoshka.json").read_text())
        c = res["config"]
        plot(res["results"], common.RESULTS / "matryoshka.png", c.get("sts_pairs", 0), c["scifact_subset"]["docs"])
        return
    ladder = default_ladder(6, 384)
    pairs = training_pairs(a.n_wiki, a.seed)
    sets = sts_sets(a.sts_pairs or None)
    sci = common.scifact_subset(a.scifact_docs, a.seed)
    results = {}
    tmp = tempfile.mkdtemp(prefix="bench-mrl-")
    try:
        for method in a.methods.split(","):
            t0 = time.perf_counter()
            if method == "naive":
                model, train_s = load_encoder(device="cpu"), 0.0
            else:
                model, train_s = train(method, pairs, os.path.join(tmp, method), steps=a.steps,
                                       batch_size=a.batch_size, lr=a.lr, seed=a.seed, ladder=ladder)
            sizes, mrl = evaluate(model, ladder, sets, sci)
            results[method] = {"sizes": sizes, "ladder_sts_average": float(np.mean([r["sts_average"] for r in sizes])),
                               "mrl128_ndcg10": mrl, "mrl128_keep": mrl / sizes[-1]["scifact_ndcg10"],
                               "train_seconds": train_s, "total_seconds": time.perf_counter() - t0}
            print(f"{method}: ladder STS avg {results[method]['ladder_sts_average']:.2f}; "
                  + "; ".join(f"{r['layers']}L/{r['dims']}d {r['sts_average']:.2f}/{r['scifact_ndcg10']:.4f}" for r in sizes),
                  file=sys.stderr)
        speed = throughput(ladder, sci[1][:256])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    targets = {}
    if {"starbucks", "2dmse", "matryoshka", "naive"} <= set(results):
        sb, md, mt, nv = (results[m] for m in ("starbucks", "2dmse", "matryoshka", "naive"))
        targets = {
            "starbucks_minus_2dmse_sts": sb["ladder_sts_average"] - md["ladder_sts_average"],
            "starbucks_minus_matryoshka_sts": sb["ladder_sts_average"] - mt["ladder_sts_average"],
            "smallest_starbucks_minus_naive_sts": sb["sizes"][0]["sts_average"] - nv["sizes"][0]["sts_average"],
            "full_starbucks_minus_untrained_sts": sb["sizes"][-1]["sts_average"] - nv["sizes"][-1]["sts_average"],
            "full_starbucks_minus_untrained_ndcg10": sb["sizes"][-1]["scifact_ndcg10"] - nv["sizes"][-1]["scifact_ndcg10"],
            "starbucks_mrl128_keep": sb["mrl128_keep"], "untrained_mrl128_keep": nv["mrl128_keep"],
        }
    common.write_results("matryoshka", {
        "config": {**vars(a), "ladder": ladder, "model": default_model_path(), "training_pairs": len(pairs),
                   "scifact_subset": {"docs": len(sci[0]), "queries": len(sci[2])}},
        "results": results, "throughput": speed, "targets": targets})
    plot(results, common.RESULTS / "matryoshka.png", a.sts_pairs, len(sci[0]))


if __name__ == "__main__":
    main()
