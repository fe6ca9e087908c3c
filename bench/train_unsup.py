"""Unsupervised contrastive training, side by side on the same base, data, seed and step budget.

Runs (each from the default model all-MiniLM-L6-v2, on the same Wikipedia sentences):
  anchor     sentence-transformers' own SimCSE recipe: MultipleNegativesRankingLoss on (s, s) pairs
  simcse     embedkit SimCSELoss (single column, one 2N-row forward)
  esimcse    embedkit ESimCSELoss (word repetition + momentum queue)
  gsimclr    embedkit SimCSELoss with G-SimCLR guided batching (k-means K = batch on the base encoder)

For each: Spearman x100 on the 7 STS test sets (STS12-16, STS-B, SICK-R) and their average, before
and after, and training steps/second relative to the anchor (measured between the first and last
optimizer step, so model loading, pseudo-labelling and saving are excluded).

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/train_unsup.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402,F401  (sets offline env vars)
from transformers import TrainerCallback  # noqa: E402

from embedkit.evaluation.sts import STANDARD_STS, evaluate_sts  # noqa: E402
from embedkit.models.loading import load_encoder  # noqa: E402
from embedkit.training.recipes import train_recipe, validate_recipe  # noqa: E402

RUNS = [
    ("anchor", "ST MNRL on (s, s) [ST SimCSE recipe]", "mnrl", "random"),
    ("simcse", "embedkit SimCSE", "simcse", "random"),
    ("esimcse", "embedkit ESimCSE", "esimcse", "random"),
    ("gsimclr", "embedkit SimCSE + G-SimCLR batches", "simcse", "gsimclr"),
]


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())

    def rate(self) -> float:
        t = self.times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else float("nan")


def _set_keys(scores: dict) -> list[str]:
    """Per-set keys in the standard order (evaluate_sts names them e.g. 'sts12.test'), then 'average'."""
    keys = [k for k in scores if k != "average"]
    order = {n: i for i, n in enumerate(STANDARD_STS)}
    return sorted(keys, key=lambda k: order.get(k.split(".")[0], 99)) + ["average"]


def warm_up(model, batch: int, max_seq_length: int, data: str) -> None:
    """A few forward/backward passes on a throwaway copy, so the first timed run pays no warm-up."""
    import copy

    from embedkit.data import read_text_lines
    from embedkit.training.recipes import resolve_path

    m = copy.deepcopy(model)
    m.max_seq_length = max_seq_length
    m.train()
    feats = m.preprocess(read_text_lines(resolve_path(data))[:batch])
    for _ in range(3):
        m(dict(feats))["sentence_embedding"].sum().backward()
    del m


def figures(name: str) -> None:
    """STS before/after per method and the word-repetition count distribution (docs/training.md)."""
    import json
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from embedkit.data import read_text_lines
    from embedkit.training.augment import word_repetition
    from embedkit.training.recipes import resolve_path

    out = Path(__file__).resolve().parents[1] / "docs" / "figures" / "training"
    out.mkdir(parents=True, exist_ok=True)
    res = json.loads((common.RESULTS / f"{name}.json").read_text())
    sets = _set_keys(res["sts_before"])
    keys = list(res["runs"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    w = 0.8 / (len(keys) + 1)
    x = np.arange(len(sets))
    ax.bar(x, [res["sts_before"][s] for s in sets], w, label="base (before)", color="0.7")
    for i, k in enumerate(keys, 1):
        ax.bar(x + i * w, [res["runs"][k]["sts_after"][s] for s in sets], w, label=res["runs"][k]["label"])
    ax.set_xticks(x + w * len(keys) / 2, [s.split(".")[0] for s in sets])
    lo = min(min(res["sts_before"][s] for s in sets), min(res["runs"][k]["sts_after"][s] for k in keys for s in sets))
    ax.set_ylim(lo - 3, None)
    ax.set_ylabel("Spearman x100")
    c = res["config"]
    ax.set_title(f"STS test sets (full), all-MiniLM-L6-v2 + {c['steps']} steps on {c.get('data', 'wiki1m_head')} "
                 f"(batch {c['batch_size']}, lr {c['learning_rate']}); anchor = ST SimCSE recipe", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax2.bar(range(len(keys)), [res["runs"][k]["rate_vs_anchor"] for k in keys], color=[f"C{i}" for i in range(len(keys))])
    ax2.set_xticks(range(len(keys)), keys, rotation=30)
    ax2.axhline(1.0, color="k", lw=0.5)
    ax2.set_title("training steps/s vs anchor\n(one run each on a shared 2-core CPU:\nratios move by ~10% between runs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "train_unsup.png", dpi=110)

    model = load_encoder()
    model.max_seq_length = c["max_seq_length"]
    texts = read_text_lines(resolve_path(c["data"]))[:2000]
    feats = model.preprocess(texts)
    g = torch.Generator().manual_seed(0)
    rep = word_repetition(feats, special_ids=model.tokenizer.all_special_ids, pad_id=model.tokenizer.pad_token_id,
                          generator=g)
    n0 = feats["attention_mask"].sum(1).numpy()
    added = rep["attention_mask"].sum(1).numpy() - n0
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(added, bins=np.arange(-0.5, 11.5, 1), rwidth=0.85)
    ax.set_xlabel("tokens repeated per sentence (dup_rate 0.32, max 10)")
    ax.set_ylabel("sentences")
    ax.set_title(f"word repetition on {len(texts)} Wikipedia sentences (max_seq_length {c['max_seq_length']})")
    fig.tight_layout()
    fig.savefig(out / "word_repetition.png", dpi=110)
    print(f"wrote {out}/train_unsup.png, {out}/word_repetition.png")


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-seq-length", type=int, default=32)
    ap.add_argument("--data", default="data:unlabeled/wiki1m_head.txt.gz")
    ap.add_argument("--runs", default=",".join(r[0] for r in RUNS))
    ap.add_argument("--no-eval", action="store_true", help="timing only (for sizing)")
    ap.add_argument("--name", default="train_unsup", help="results file name (bench/results/NAME.json)")
    ap.add_argument("--figures", action="store_true",
                    help="only draw docs/figures/training/*.png from bench/results/NAME.json and exit")
    a = ap.parse_args()
    if a.figures:
        figures(a.name)
        return

    work = tempfile.mkdtemp(prefix="embedkit-train-unsup-")
    t_all = time.perf_counter()
    base = load_encoder()
    before = None
    if not a.no_eval:
        t = time.perf_counter()
        before = evaluate_sts(base, show_progress=False)  # cached across runs (base weights are fixed)
        print(f"base: STS average {before['average']:.2f} ({time.perf_counter() - t:.0f} s)", flush=True)
    warm_up(base, a.batch, a.max_seq_length, a.data)
    results = {}
    for key, label, loss, sampler in RUNS:
        if key not in a.runs.split(","):
            continue
        recipe = validate_recipe({
            "model": "default", "output": os.path.join(work, key), "data": {"train": a.data},
            "loss": {"name": loss}, "sampler": {"name": sampler, "embed": "encoder"},
            "training": {"seed": a.seed, "batch_size": a.batch, "max_seq_length": a.max_seq_length,
                         "learning_rate": a.lr, "max_steps": a.steps, "checkpoint_every": a.steps,
                         "keep_checkpoints": 1, "logging_steps": max(1, a.steps // 4)},
            "eval": {"sets": [], "select_best": False},
        }, f"bench:{key}")
        timer = StepTimer()
        t = time.perf_counter()
        res = train_recipe(recipe, show_progress=False, callbacks=[timer])
        wall = time.perf_counter() - t
        row = {"label": label, "loss": loss, "sampler": sampler, "steps": res.global_step,
               "steps_per_second": timer.rate(), "train_wall_seconds": wall, "sampler_stats": res.sampler_stats}
        if not a.no_eval:
            t = time.perf_counter()
            after = evaluate_sts(load_encoder(str(res.output)), cache=False)
            row["sts_after"] = after
            row["eval_seconds"] = time.perf_counter() - t
            row["delta_average"] = after["average"] - before["average"]
        results[key] = row
        print(f"{key}: {row['steps_per_second']:.3f} steps/s, wall {wall:.0f} s"
              + (f", STS avg {row['sts_after']['average']:.2f} ({row['delta_average']:+.2f})" if not a.no_eval else ""),
              flush=True)
        if a.name:  # partial results survive a crash later in the run
            common.write_results(a.name + ".partial", {"sts_before": before, "runs": results})
        shutil.rmtree(res.output, ignore_errors=True)
        shutil.rmtree(str(res.output) + ".checkpoints", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)

    anchor_rate = results.get("anchor", {}).get("steps_per_second")
    for row in results.values():
        row["rate_vs_anchor"] = row["steps_per_second"] / anchor_rate if anchor_rate else None

    targets = {}
    if not a.no_eval and {"anchor", "simcse", "esimcse"} <= set(results):
        avg = {k: r["sts_after"]["average"] for k, r in results.items()}
        d = avg["simcse"] - avg["anchor"]
        targets["simcse_within_0.3_of_anchor"] = {"value": d, "met": abs(d) <= 0.3}
        d = avg["esimcse"] - avg["simcse"]
        targets["esimcse_ge_simcse"] = {"value": d, "met": d >= 0}
    if {"simcse", "esimcse"} <= set(results):
        ratio = results["esimcse"]["steps_per_second"] / results["simcse"]["steps_per_second"]
        targets["esimcse_rate_ge_0.6x_simcse"] = {"value": ratio, "met": ratio >= 0.6}

    payload = {
        "config": {"steps": a.steps, "batch_size": a.batch, "learning_rate": a.lr, "seed": a.seed,
                   "max_seq_length": a.max_seq_length, "data": a.data, "base": "all-MiniLM-L6-v2"},
        "sts_before": before, "runs": results, "targets": targets,
        "total_seconds": time.perf_counter() - t_all,
    }
    if a.name:
        common.write_results(a.name, payload)
        (common.RESULTS / f"{a.name}.partial.json").unlink(missing_ok=True)

    # table
    sets = _set_keys(before) if before else []
    if not a.no_eval:
        print("\n| model | " + " | ".join(s.split(".")[0] for s in sets) + " | steps/s | vs anchor |")
        print("|---|" + "---|" * (len(sets) + 2))
        print("| base (before) | " + " | ".join(f"{before[s]:.2f}" for s in sets) + " | | |")
        for r in results.values():
            print(f"| {r['label']} | " + " | ".join(f"{r['sts_after'][s]:.2f}" for s in sets)
                  + f" | {r['steps_per_second']:.3f} | {r['rate_vs_anchor']:.2f}x |")
    else:
        for key, r in results.items():
            print(f"{key}: {r['steps_per_second']:.3f} steps/s ({r['rate_vs_anchor']:.2f}x anchor)")
    print()
    for name, tgt in targets.items():  # noqa: B007
        print(f"target {name}: {'MET' if tgt['met'] else 'MISSED'} ({tgt['value']:+.3f})")



if __name__ == "__main__":
    main()
