"""NV-Embed-style two-stage fine-tuning: mean vs latent-attention pooling, with vs without mined negatives.

From the default model (all-MiniLM-L6-v2), the same two-stage recipe and steps for every run:
  stage 1  SciFact qrels/train.tsv (query, relevant abstract) with MultipleNegativesRankingLoss —
           in-batch negatives, plus 1 mined hard negative per pair when "mined"
  stage 2  the same retrieval pairs blended with STS-B train pairs (CoSENT: no in-batch negatives)
Runs: mean / latent_attention pooling x in-batch only / + mined negatives.
Hard negatives: embedkit `mine` (TopK-PercPos, 95% of the positive's score) on the SciFact corpus, and
sentence-transformers' `mine_hard_negatives` (relative_margin 0.05 = the same 95% rule) in the same run
on the same corpus and model, both starting with no cached embeddings (mining time = encode + search).
Reported: SciFact test nDCG@10 (every judged document + seeded random others, see --scifact-docs) and
the STS average (STS12-16, STS-B test, SICK-R test; --sts-pairs per set) before and after.
Results: bench/results/latent_pooling.json + .png.

    .venv/bin/python bench/latent_pooling.py [--steps 60] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402,F401
import numpy as np  # noqa: E402

from embedkit.data import read_beir, read_sts_tsv  # noqa: E402
from embedkit.evaluation.sts import STANDARD_STS, spearman_cosine  # noqa: E402
from embedkit.models.loading import default_model_path, load_encoder  # noqa: E402
from embedkit.retrieval.metrics import ndcg_at_k  # noqa: E402


def evaluate(model, sci, n_sts):
    ids, docs, qids, queries, qrels = sci
    model.max_seq_length = 256
    D = model.encode(docs, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
    Q = model.encode(queries, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
    S = Q @ D.T
    top = np.argsort(-S, axis=1)[:, :100]
    ndcg = ndcg_at_k({q: {ids[j]: float(S[i, j]) for j in top[i]} for i, q in enumerate(qids)}, qrels, 10)
    sts = {}
    for name in STANDARD_STS:
        ds = read_sts_tsv(common.data_dir() / "sts" / f"{name}.test.tsv")
        n = min(n_sts, len(ds.scores))
        a = model.encode(ds.sentences1[:n], batch_size=64, convert_to_numpy=True)
        b = model.encode(ds.sentences2[:n], batch_size=64, convert_to_numpy=True)
        sts[name] = spearman_cosine(a, b, ds.scores[:n])  # already x100
    return {"scifact_ndcg10": ndcg, "sts": sts, "sts_average": float(np.mean(list(sts.values())))}


def mine_both(tmp, n_corpus, seed):
    """embedkit mine vs sentence-transformers mine_hard_negatives on the same corpus subset, cold caches."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from embedkit.training.mining import mine_hard_negatives as ek_mine
    from embedkit.training.mining import write_triplets

    tr = read_beir(common.scifact_dir(), split="train")
    pairs = [(tr.queries[q], d) for q, rel in tr.qrels.items() for d, r in rel.items() if r > 0 and q in tr.queries]
    pos = sorted({d for _, d in pairs})
    rest = sorted(set(tr.corpus) - set(pos))
    random.Random(seed).shuffle(rest)
    cids = pos + rest[: max(0, n_corpus - len(pos))]
    ctexts = [(tr.corpus[d].get("title", "") + " " + tr.corpus[d]["text"]).strip() for d in cids]
    model = load_encoder(device="cpu")
    model.max_seq_length = 256
    os.environ["EMBEDKIT_CACHE"] = os.path.join(tmp, "cold-cache")  # embedkit pays its own encoding
    t = time.perf_counter()
    mined = ek_mine(pairs, cids, ctexts, model, num_negatives=1, max_positive_ratio=0.95, batch_size=32)
    ek_s = time.perf_counter() - t
    os.environ.pop("EMBEDKIT_CACHE")
    path = write_triplets(os.path.join(tmp, "triplets.tsv"), mined, dict(zip(cids, ctexts)))
    corpus_text = dict(zip(cids, ctexts))
    ds = Dataset.from_dict({"query": [q for q, _ in pairs], "answer": [corpus_text[d] for _, d in pairs]})
    t = time.perf_counter()
    st = mine_hard_negatives(ds, model, corpus=ctexts, num_negatives=1, relative_margin=0.05, range_max=14,
                             sampling_strategy="top", batch_size=32, verbose=False)
    st_s = time.perf_counter() - t
    return path, {"pairs": len(pairs), "corpus": len(cids), "embedkit_seconds": ek_s, "sentence_transformers_seconds": st_s,
                  "throughput_ratio_embedkit_over_st": st_s / ek_s, "embedkit_stats": mined.stats,
                  "st_rows": len(st)}


def recipe(out, stage1_data, pooling, steps, batch, lr, seed):
    sts_train = str(common.data_dir() / "sts" / "stsb.train.tsv")
    base = {
        "model": "default", "output": out,
        "data": stage1_data,
        "loss": {"name": "mnrl", "temperature": 0.05},
        "sampler": {"name": "no_duplicates"},
        "pooling": {"name": pooling, "num_latents": 64, "num_heads": 8},
        "training": {"seed": seed, "batch_size": batch, "max_seq_length": 128, "learning_rate": lr,
                     "max_steps": steps, "checkpoint_every": steps, "warmup_ratio": 0.1, "logging_steps": 10},
        "eval": {"sets": []},
    }
    base["stages"] = [
        {},
        {"data": {"extra": [{"train": sts_train, "format": "scored_pairs", "loss": {"name": "cosent"}}]}},
    ]
    return base


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--scifact-docs", type=int, default=800)
    ap.add_argument("--sts-pairs", type=int, default=500)
    ap.add_argument("--mine-corpus", type=int, default=1500)
    a = ap.parse_args()
    from embedkit.training import validate_recipe
    from embedkit.training.run import train_recipe

    sci = common.scifact_subset(a.scifact_docs, a.seed)
    tmp = tempfile.mkdtemp(prefix="bench-latent-")
    results = {}
    try:
        triplets, mining = mine_both(tmp, a.mine_corpus, a.seed)
        print(f"mining: embedkit {mining['embedkit_seconds']:.1f}s, ST {mining['sentence_transformers_seconds']:.1f}s",
              file=sys.stderr)
        results["untrained"] = evaluate(load_encoder(device="cpu"), sci, a.sts_pairs)
        data = {"inbatch": {"train": str(common.scifact_dir()), "format": "beir"},
                "mined": {"train": str(triplets), "format": "pairs"}}
        for pooling in ("mean", "latent_attention"):
            for neg, d in data.items():
                name = f"{pooling}+{neg}"
                out = os.path.join(tmp, name.replace("+", "_"))
                t = time.perf_counter()
                train_recipe(validate_recipe(recipe(out, d, pooling, a.steps, a.batch_size, a.lr, a.seed), name),
                             show_progress=False)
                train_s = time.perf_counter() - t
                results[name] = {**evaluate(load_encoder(out, device="cpu"), sci, a.sts_pairs), "train_seconds": train_s}
                print(f"{name}: nDCG@10 {results[name]['scifact_ndcg10']:.4f} STS {results[name]['sts_average']:.2f}",
                      file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    u = results["untrained"]
    targets = {
        "mined_minus_inbatch_ndcg10_mean_pooling": results["mean+mined"]["scifact_ndcg10"] - results["mean+inbatch"]["scifact_ndcg10"],
        "latent_minus_mean_ndcg10_inbatch": results["latent_attention+inbatch"]["scifact_ndcg10"] - results["mean+inbatch"]["scifact_ndcg10"],
        "latent_minus_mean_ndcg10_mined": results["latent_attention+mined"]["scifact_ndcg10"] - results["mean+mined"]["scifact_ndcg10"],
        "worst_sts_change_vs_untrained": min(r["sts_average"] - u["sts_average"] for k, r in results.items() if k != "untrained"),
        "mining_throughput_ratio": mining["throughput_ratio_embedkit_over_st"],
    }
    common.write_results("latent_pooling", {"config": {**vars(a), "model": default_model_path()}, "mining": mining,
                                            "results": results, "targets": targets})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ref = results.get("untrained", {})
    common.zoomed_bars(axes[0], names, [results[n]["scifact_ndcg10"] for n in names], ["0.6"] + [f"C{i}" for i in range(4)],
                       reference=ref.get("scifact_ndcg10"))
    axes[0].set_title(f"SciFact test nDCG@10 ({len(sci[0])}-doc subset: judged + random)")
    common.zoomed_bars(axes[1], names, [results[n]["sts_average"] for n in names], ["0.6"] + [f"C{i}" for i in range(4)],
                       fmt="%.2f", reference=ref.get("sts_average"))
    axes[1].set_title(f"STS average (7 test sets, first {a.sts_pairs} pairs each)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=25)
    fig.suptitle(f"all-MiniLM-L6-v2, two-stage recipe, {a.steps} steps per stage; grey and dashed = untrained", fontsize=9)
    fig.tight_layout()
    fig.savefig(common.RESULTS / "latent_pooling.png", dpi=110)


if __name__ == "__main__":
    main()
