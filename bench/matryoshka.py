"""Matryoshka and Starbucks trainers, side by side: one model at every (layers, dims) size.

From the default model (all-MiniLM-L6-v2), the same training pairs, order, steps, batch size,
learning rate and seed for every trained method (a plain sentence-transformers trainer over the losses):

  (a) naive       no training: the untrained cut (first L layers pooled, first D dims, renormalised)
  (b) inner       MultipleNegativesRankingLoss at the full size only
  (c) matryoshka  sentence-transformers' MatryoshkaLoss(MNRL, dims of the ladder)
  (d) 2dmse       Matryoshka2dLoss(MNRL, dims of the ladder) — sentence-transformers' 2DMSE, on embedkit's
                  layer-L embedding (identical for this BERT-style model)
  (e) starbucks   embedkit StarbucksLoss(MNRL, the diagonal ladder (1,32) ... (6,384)) with the settings of
                  the shipped configs/starbucks.yaml; ``starbucks:key=value;...`` overrides them for a
                  variant, e.g. ``starbucks:distil_weight=0`` or ``starbucks:kl=scores;distil_weight=0``

Two data regimes (never test data; pairs shuffled with the seed):

  unlabelled  SciFact qrels/train.tsv (query, relevant abstract) + unlabelled Wikipedia sentences from
              shared/data/unlabeled as (s, s) pairs (SimCSE-style dropout views)
  paraphrase  STS-B train and SICK-R train pairs scored >= 4 (of 5) + SciFact train. Caveat: STS-B is a
              selection of STS 2012-2017 pairs, so it overlaps the STS12-16 test sets; every method
              trains on the same pairs, so the comparison between methods stays fair.

For every ladder size: Spearman x100 on STS12-16, STS-B test and SICK-R test and their average (the
full sets by default); SciFact test nDCG@10 (the full corpus by default); bytes/vector; encode
throughput of the physically truncated sub-model (texts/s, SciFact abstracts); and mrl:128 on each
trained model's full layers. Starbucks and 2DMSE run with ``--seeds`` seeds (2 by default), the
other methods with the first. Results: bench/results/matryoshka.json + .png; the issue's targets
are checked per regime (``targets``), a difference counting as beyond the seed spread when it
exceeds the larger of the two methods' seed ranges.

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/matryoshka.py          # the CPU protocol (~1.5 h)
    .venv/bin/python bench/matryoshka.py --steps 1000 --batch-size 128 --scifact-docs 0   # on a GPU
    .venv/bin/python bench/matryoshka.py --smoke                                # minutes: proves it runs
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402,F401  (sets offline env vars)
import numpy as np  # noqa: E402

from embedkit._io import atomic_write_json  # noqa: E402
from embedkit.data import read_beir, read_sts_tsv  # noqa: E402
from embedkit.evaluation.sts import STANDARD_STS, spearman_cosine  # noqa: E402
from embedkit.models.loading import default_model_path, load_encoder  # noqa: E402
from embedkit.models.submodel import encode_ladder  # noqa: E402
from embedkit.retrieval.metrics import ndcg_at_k  # noqa: E402
from embedkit.training.losses.starbucks import StarbucksLoss, default_ladder  # noqa: E402

METHODS = ("naive", "inner", "matryoshka", "2dmse", "starbucks")
REGIMES = ("unlabelled", "paraphrase")
SEEDED = ("2dmse", "starbucks")  # methods run with every seed


def scifact_train_pairs() -> list[tuple[str, str]]:
    ds = read_beir(common.scifact_dir(), split="train")
    return [(ds.queries[q], (ds.corpus[d].get("title", "") + " " + ds.corpus[d]["text"]).strip())
            for q, rel in ds.qrels.items() for d, r in rel.items() if r > 0 and q in ds.queries and d in ds.corpus]


def scored_pairs(path, min_score: float) -> list[tuple[str, str]]:
    ds = read_sts_tsv(path)
    return [(a, b) for a, b, s in zip(ds.sentences1, ds.sentences2, ds.scores) if s >= min_score]


def training_pairs(regime: str, n_wiki: int, seed: int) -> list[tuple[str, str]]:
    """The regime's training pairs, shuffled with ``seed`` (the same list for every method)."""
    pairs = scifact_train_pairs()
    if regime == "unlabelled":
        with gzip.open(common.data_dir() / "unlabeled" / "wiki1m_head.txt.gz", "rt", encoding="utf-8") as f:
            wiki = [s.strip() for s in f if len(s.split()) >= 5]
        random.Random(seed).shuffle(wiki)
        pairs += [(s, s) for s in wiki[:n_wiki]]
    elif regime == "paraphrase":
        sts = common.data_dir() / "sts"
        pairs += scored_pairs(sts / "stsb.train.tsv", 4.0) + scored_pairs(sts / "sickr.train.tsv", 4.0)
    else:
        raise SystemExit(f"--regimes: unknown regime {regime!r}; choose from {', '.join(REGIMES)}")
    random.Random(seed).shuffle(pairs)
    return pairs


def shipped_starbucks() -> dict:
    """The StarbucksLoss settings of configs/starbucks.yaml (its ladder aside: the bench uses the same one)."""
    from embedkit.training import load_recipe

    cfg = load_recipe(Path(__file__).resolve().parent.parent / "configs" / "starbucks.yaml").config["loss"]["starbucks"]
    return {k: v for k, v in cfg.items() if k != "ladder"}


def parse_method(spec: str) -> tuple[str, dict]:
    """``starbucks:distil_weight=0,kl=scores`` -> ("starbucks", {"distil_weight": 0.0, "kl": "scores"})."""
    name, _, rest = spec.partition(":")
    if name not in METHODS:
        raise SystemExit(f"--methods: unknown method {name!r}; choose from {', '.join(METHODS)}")
    kw = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            kw[key] = float(value)
        except ValueError:
            kw[key] = value
    if kw and name != "starbucks":
        raise SystemExit(f"--methods: {spec!r}: only starbucks takes settings")
    return name, kw


def train(method: str, pairs, out: str, *, steps: int, batch_size: int, lr: float, seed: int, ladder,
          max_seq_length: int = 64, options: dict | None = None):
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    from embedkit.training.losses.matryoshka2d import Matryoshka2dLoss

    torch.manual_seed(seed)
    model = load_encoder(device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = max_seq_length  # training only: short, so every method gets the same cheap steps
    inner = MultipleNegativesRankingLoss(model)
    dims = sorted({d for _, d in ladder}, reverse=True)
    loss = {"inner": lambda: inner,
            "matryoshka": lambda: MatryoshkaLoss(model, inner, dims),
            "2dmse": lambda: Matryoshka2dLoss(model, inner, dims),
            "starbucks": lambda: StarbucksLoss(model, inner, ladder, **{**shipped_starbucks(), **(options or {})})}[method]()
    data = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=out, max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        warmup_steps=0.1, seed=seed, data_seed=seed, use_cpu=not torch.cuda.is_available(), report_to=[],
        save_strategy="no", logging_steps=max(1, steps // 5), batch_sampler="no_duplicates",
        dataloader_drop_last=True, disable_tqdm=True)
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
    model.max_seq_length = 128  # the same for every method (training used a shorter one)
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


def scifact(n_docs: int, n_queries: int, seed: int):
    """SciFact test: the first ``n_queries`` judged queries (0 = all) and a corpus of their judged documents
    plus seeded random others, ``n_docs`` in all (0 = the whole corpus)."""
    doc_ids, docs, q_ids, queries, qrels = common.scifact_subset(10**9, seed)
    if n_queries:
        q_ids, queries = q_ids[:n_queries], queries[:n_queries]
        qrels = {q: qrels[q] for q in q_ids}
    if n_docs:
        judged = {d for q in q_ids for d in qrels[q]}
        keep = [i for i, d in enumerate(doc_ids) if d in judged]
        others = [i for i, d in enumerate(doc_ids) if d not in judged]
        random.Random(seed).shuffle(others)
        keep = sorted(keep + others[: max(0, n_docs - len(keep))])
        doc_ids, docs = [doc_ids[i] for i in keep], [docs[i] for i in keep]
    return doc_ids, docs, q_ids, queries, qrels


def summarize(runs: list[dict]) -> dict:
    """Seed mean of a method's runs, with each seed's ladder STS average (its range is the seed spread)."""
    first = runs[0]
    sizes = []
    for i, r in enumerate(first["sizes"]):
        sizes.append({**{k: v for k, v in r.items() if k not in ("sts",)},
                      "sts_average": float(np.mean([run["sizes"][i]["sts_average"] for run in runs])),
                      "scifact_ndcg10": float(np.mean([run["sizes"][i]["scifact_ndcg10"] for run in runs])),
                      "sts": {n: float(np.mean([run["sizes"][i]["sts"][n] for run in runs])) for n in r["sts"]}})
    ladder = [run["ladder_sts_average"] for run in runs]
    return {"sizes": sizes, "ladder_sts_average": float(np.mean(ladder)), "ladder_sts_by_seed": ladder,
            "seed_spread": float(max(ladder) - min(ladder)),
            "ladder_ndcg10": float(np.mean([run["ladder_ndcg10"] for run in runs])),
            "mrl128_ndcg10": float(np.mean([run["mrl128_ndcg10"] for run in runs])),
            "train_seconds": float(np.mean([run["train_seconds"] for run in runs])), "seeds": [run["seed"] for run in runs]}


def regime_targets(res: dict) -> dict:
    """The issue's numbers for one regime (Starbucks = the shipped recipe's settings, method `starbucks`)."""
    if not {"starbucks", "2dmse", "matryoshka", "naive"} <= set(res):
        return {}
    sb, md, mt, nv = (res[m] for m in ("starbucks", "2dmse", "matryoshka", "naive"))
    spread = max(sb["seed_spread"], md["seed_spread"])
    return {
        "starbucks_minus_2dmse_sts": sb["ladder_sts_average"] - md["ladder_sts_average"],
        "starbucks_minus_matryoshka_sts": sb["ladder_sts_average"] - mt["ladder_sts_average"],
        "seed_spread": spread,
        "starbucks_beats_2dmse_beyond_spread": sb["ladder_sts_average"] - md["ladder_sts_average"] > spread,
        "smallest_starbucks_minus_untrained_sts": sb["sizes"][0]["sts_average"] - nv["sizes"][0]["sts_average"],
        "full_starbucks_minus_untrained_sts": sb["sizes"][-1]["sts_average"] - nv["sizes"][-1]["sts_average"],
        "full_starbucks_minus_untrained_ndcg10": sb["sizes"][-1]["scifact_ndcg10"] - nv["sizes"][-1]["scifact_ndcg10"],
        "starbucks_minus_2dmse_ladder_ndcg10": sb["ladder_ndcg10"] - md["ladder_ndcg10"],
    }


def overall_targets(per_regime: dict) -> dict:
    t = {r: v for r, v in per_regime.items() if v}
    if not t:
        return {}
    out = {
        "ladder_lead_1.0_in_some_regime": any(v["starbucks_minus_2dmse_sts"] >= 1.0
                                              and v["starbucks_minus_matryoshka_sts"] >= 1.0 for v in t.values()),
        "ladder_beats_2dmse_beyond_spread_everywhere": all(v["starbucks_beats_2dmse_beyond_spread"] for v in t.values()),
        "full_within_0.5_sts_everywhere": all(v["full_starbucks_minus_untrained_sts"] >= -0.5 for v in t.values()),
        "full_ndcg_not_below_untrained_everywhere": all(v["full_starbucks_minus_untrained_ndcg10"] >= 0
                                                        for v in t.values()),
    }
    if "paraphrase" in t:
        out["smallest_plus_5_sts_paraphrase"] = t["paraphrase"]["smallest_starbucks_minus_untrained_sts"] >= 5.0
    return out


def plot(results, path, config):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = list(results)
    fig, axes = plt.subplots(len(regimes), 2, figsize=(11, 4.0 * len(regimes)), squeeze=False)
    for row, regime in enumerate(regimes):
        for method, res in results[regime].items():
            xs = [f"{r['layers']}L/{r['dims']}d" for r in res["sizes"]]
            style = dict(marker="o", linestyle="--" if method == "naive" else "-",
                         label=method + (" (no training)" if method == "naive" else "")
                         + (f" ({len(res['seeds'])} seeds)" if len(res["seeds"]) > 1 else ""))
            axes[row][0].plot(xs, [r["sts_average"] for r in res["sizes"]], **style)
            axes[row][1].plot(xs, [r["scifact_ndcg10"] for r in res["sizes"]], **style)
        axes[row][0].set_title(f"{regime}: STS average (STS12-16, STS-B, SICK-R test), Spearman x100", fontsize=8)
        axes[row][1].set_title(f"{regime}: SciFact test nDCG@10 ({config['scifact_subset']['docs']} docs)", fontsize=8)
        for ax in axes[row]:
            ax.set_xlabel("size (layers / dims)")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=7)
    fig.suptitle(f"all-MiniLM-L6-v2, {config['steps']} steps x batch {config['batch_size']} per method; "
                 "2dmse = Matryoshka2dLoss (anchor)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150,
                    help="per method (150 x batch 32: ~7 min per training on a 2-core CPU; 300 would take ~2.5 h in all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seeds", default="42,43", help="seeds for starbucks and 2dmse; the other methods use the first")
    ap.add_argument("--regimes", default=",".join(REGIMES))
    ap.add_argument("--n-wiki", type=int, default=9000, help="unlabelled regime: Wikipedia (s, s) pairs")
    ap.add_argument("--max-seq-length", type=int, default=64, help="training only (evaluation: 128 STS, 256 SciFact)")
    ap.add_argument("--scifact-docs", type=int, default=2000,
                    help="SciFact corpus subset: judged + random others (0 = all 5,183; 2,000 keeps the CPU protocol "
                         "near 1.5 h)")
    ap.add_argument("--scifact-queries", type=int, default=0, help="the first N judged test queries (0 = all 300)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated; a Starbucks variant as starbucks:key=value;key=value (';' between settings)")
    ap.add_argument("--sts-pairs", type=int, default=0, help="first N pairs of each STS test set (0 = all)")
    ap.add_argument("--no-throughput", action="store_true", help="skip the sub-model encode-speed measurement")
    ap.add_argument("--out", default=None, help="results name under bench/results (default matryoshka)")
    ap.add_argument("--smoke", action="store_true",
                    help="a minutes-long run that proves the script works (2 steps, tiny eval; results in a temp folder)")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from the results JSON")
    ap.add_argument("--state", default=None,
                    help="finished runs are kept here (default: a file per results name in the temp folder): a rerun "
                         "with the same settings skips them, so the protocol can be split over sittings")
    a = ap.parse_args()
    if a.smoke:
        a.steps, a.batch_size, a.seeds, a.n_wiki, a.sts_pairs = 2, 4, "42", 100, 20
        a.scifact_docs, a.scifact_queries, a.no_throughput, a.out = 40, 10, True, a.out or "matryoshka_smoke"
    name = a.out or "matryoshka"
    if a.smoke:  # proves the script runs; its numbers mean nothing, so they stay out of bench/results
        common.RESULTS = Path(tempfile.mkdtemp(prefix="bench-mrl-smoke-"))
    if a.plot_only:
        res = json.loads((common.RESULTS / f"{name}.json").read_text())
        plot(res["results"], common.RESULTS / f"{name}.png", res["config"])
        return
    ladder = default_ladder(6, 384)
    seeds = [int(x) for x in a.seeds.split(",")]
    methods = _split_methods(a.methods)
    sets = sts_sets(a.sts_pairs or None)
    sci = scifact(a.scifact_docs, a.scifact_queries, seeds[0])
    results, per_regime, n_pairs = {}, {}, {}
    tmp = tempfile.mkdtemp(prefix="bench-mrl-")
    state_path = Path(a.state or os.path.join(tempfile.gettempdir(), f"embedkit-bench-{name}-state.json"))
    settings = {k: v for k, v in vars(a).items() if k in ("steps", "batch_size", "lr", "n_wiki", "max_seq_length",
                                                             "scifact_docs", "scifact_queries", "sts_pairs")}
    settings["starbucks_settings"] = shipped_starbucks()
    state = json.loads(state_path.read_text()) if state_path.exists() and not a.smoke else {}
    if state.get("settings") != settings:
        state = {"settings": settings, "runs": {}}
    done = state["runs"]
    naive = tuple(done["naive"]) if "naive" in done else None
    try:
        for regime in a.regimes.split(","):
            pairs = training_pairs(regime, a.n_wiki, seeds[0])
            n_pairs[regime] = len(pairs)
            runs = {}
            for spec in methods:
                method, options = parse_method(spec)
                for seed in (seeds if method in SEEDED else seeds[:1]):
                    t0 = time.perf_counter()
                    key = f"{regime}|{spec}|{seed}"
                    if key in done:
                        print(f"{key}: kept from {state_path}", file=sys.stderr)
                        runs.setdefault(spec, []).append(done[key])
                        continue
                    if method == "naive":
                        if naive is None:  # the same untrained model in every regime
                            sizes, mrl = evaluate(load_encoder(), ladder, sets, sci)
                            naive = (sizes, mrl)
                            done["naive"] = list(naive)
                        (sizes, mrl), train_s = naive, 0.0
                    else:
                        model, train_s = train(method, pairs, os.path.join(tmp, f"{regime}-{spec}-{seed}"),
                                               steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=seed,
                                               ladder=ladder, max_seq_length=a.max_seq_length, options=options)
                        sizes, mrl = evaluate(model, ladder, sets, sci)
                    run = {"seed": seed, "sizes": sizes,
                           "ladder_sts_average": float(np.mean([r["sts_average"] for r in sizes])),
                           "ladder_ndcg10": float(np.mean([r["scifact_ndcg10"] for r in sizes])),
                           "mrl128_ndcg10": mrl, "train_seconds": train_s, "total_seconds": time.perf_counter() - t0}
                    runs.setdefault(spec, []).append(run)
                    done[key] = run
                    atomic_write_json(state_path, state)
                    print(f"{regime} {spec} seed {seed}: ladder STS avg {run['ladder_sts_average']:.2f}; "
                          + "; ".join(f"{r['layers']}L/{r['dims']}d {r['sts_average']:.2f}/{r['scifact_ndcg10']:.4f}"
                                      for r in sizes), file=sys.stderr, flush=True)
            results[regime] = {spec: summarize(r) for spec, r in runs.items()}
            per_regime[regime] = regime_targets(results[regime])
        speed = [] if a.no_throughput else throughput(ladder, sci[1][:256])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = {**vars(a), "ladder": ladder, "model": default_model_path(), "training_pairs": n_pairs,
              "scifact_subset": {"docs": len(sci[0]), "queries": len(sci[2])},
              "starbucks_settings": shipped_starbucks()}
    common.write_results(name, {"config": config, "load_average": common.load_average(), "results": results,
                                "throughput": speed, "targets": {"per_regime": per_regime,
                                                                 "overall": overall_targets(per_regime)}})
    plot(results, common.RESULTS / f"{name}.png", config)


def _split_methods(text: str) -> list[str]:
    """Split ``a,b,starbucks:x=1;y=2,c`` at commas that start a new method (settings use ';')."""
    return [m.replace(";", ",") for m in text.split(",") if m]


if __name__ == "__main__":
    main()
