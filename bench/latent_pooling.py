"""NV-Embed's two-stage recipe on all-MiniLM-L6-v2: mean vs latent-attention pooling x in-batch vs mined negatives.

The runs are configs/nvembed.yaml with the model, steps and seeds set here (issue 27's protocol):
  stage 1  every SciFact train pair (919 qrels, 809 queries) with the claim instruction, MNRL with in-batch
           negatives; "mined" adds 3 hard negatives per pair mined from the full 5,183-abstract corpus by the
           default model (TopK-PercPos, 95% of the query's weakest positive)
  stage 2  the paper's section 3.3: the retrieval pairs blended with STS-B train pairs scoring >= 4 (both
           directions, 3 mined negatives each, the STS instruction on both sides), in-batch negatives off.
           The "inbatch" arm has no hard negatives, so its retrieval pairs keep in-batch negatives, the only
           negatives they have (its STS pairs are as in the mined arm).
  documents cut at 128 tokens, batch 16, one epoch per stage (--epochs), lr 2e-5, warm-up 10%.
Runs: mean pooling x {in-batch, mined} x seeds {42, 43}; latent attention (512 latents, 8 full-width heads)
x {in-batch, mined} x seed 42.
Mining: embedkit `mine_hard_negatives` and sentence-transformers' `mine_hard_negatives`
(relative_margin 0.05 = the same rule, same candidates, same model and max_seq_length) on the same corpus,
each starting with no cached embeddings (time = encode + search); the share of pairs where both chose the
same negatives is reported.
Evaluation: SciFact test nDCG@10 over the full corpus (queries with the claim instruction after training);
the STS average of STS12-16, STS-B test, SICK-R test (first 1,000 pairs of each; the STS instruction on both
sides after training). Trained models are also scored without any instruction ("without_instructions").
Results: bench/results/latent_pooling.json + .png (a run with --max-steps or --corpus-docs writes
latent_pooling_smoke.json instead).

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/latent_pooling.py            # the full protocol (~1 h, 2 cores)
    .venv/bin/python bench/latent_pooling.py --max-steps 2 --corpus-docs 400 --sts-pairs 40 --runs mean+mined@42
    .venv/bin/python bench/latent_pooling.py --measure-memory   # the pooling memory estimate vs a measured peak
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from embedkit.data import read_beir, read_sts_tsv  # noqa: E402
from embedkit.evaluation.sts import STANDARD_STS, spearman_cosine  # noqa: E402
from embedkit.models.loading import default_model_path, load_encoder  # noqa: E402
from embedkit.retrieval.metrics import ndcg_at_k  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "nvembed.yaml"
RUNS = ["mean+inbatch@42", "mean+mined@42", "mean+inbatch@43", "mean+mined@43", "latent_attention+inbatch@42",
        "latent_attention+mined@42"]


def shipped_recipe() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def instructions(rec: dict) -> tuple[str, str]:
    """(query instruction, STS instruction) of the shipped recipe."""
    return rec["training"]["prompts"]["anchor"], rec["stages"][1]["data"]["extra"][0]["prompts"]


def corpus_subset(n_docs: int | None, seed: int):
    """SciFact's corpus (all of it, or every train/test-judged document plus seeded random others)."""
    tr, te = read_beir(common.scifact_dir(), split="train"), read_beir(common.scifact_dir(), split="test")
    ids = sorted(tr.corpus)
    if n_docs:
        judged = {d for ds in (tr, te) for rel in ds.qrels.values() for d in rel} & set(tr.corpus)
        others = sorted(set(tr.corpus) - judged)
        random.Random(seed).shuffle(others)
        ids = sorted(judged) + others[: max(0, n_docs - len(judged))]
    return ids, [(tr.corpus[d].get("title", "") + " " + tr.corpus[d]["text"]).strip() for d in ids]


def write_beir_subset(folder: Path, ids: list[str]) -> Path:
    """A BEIR folder holding only ``ids`` of SciFact's corpus (the smoke runs' smaller corpus)."""
    import gzip

    src = common.scifact_dir()
    keep = set(ids)
    (folder / "qrels").mkdir(parents=True)
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8") as f, \
            open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for line in f:
            if json.loads(line)["_id"] in keep:
                out.write(line)
    shutil.copy(src / "queries.jsonl", folder / "queries.jsonl")
    for split in ("train", "test"):
        rows = (src / "qrels" / f"{split}.tsv").read_text().splitlines()
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join([rows[0]] + [r for r in rows[1:]
                                                                             if r.split("\t")[1] in keep]) + "\n")
    return folder


def evaluate(model, corpus, query_prompt: str | None, sts_prompt: str | None, n_sts: int | None):
    """SciFact test nDCG@10 (every listed document) and STS Spearman x100 per set and on average, with the
    instructions given (the recipe's use) and, when there are any, also without them."""
    ids, docs = corpus
    te = read_beir(common.scifact_dir(), split="test")
    qids = sorted(q for q in te.qrels if q in te.queries)
    model.max_seq_length = 256
    D = model.encode(docs, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)  # never an instruction
    sets = {name: read_sts_tsv(common.data_dir() / "sts" / f"{name}.test.tsv") for name in STANDARD_STS}

    def scores(q_prompt, s_prompt):
        Q = model.encode([te.queries[q] for q in qids], batch_size=64, convert_to_numpy=True,
                         normalize_embeddings=True, prompt=q_prompt)
        S = Q @ D.T
        top = np.argsort(-S, axis=1)[:, :100]
        ndcg = ndcg_at_k({q: {ids[j]: float(S[i, j]) for j in top[i]} for i, q in enumerate(qids)}, te.qrels, 10)
        sts = {}
        for name, ds in sets.items():
            n = len(ds.scores) if n_sts is None else min(n_sts, len(ds.scores))
            a = model.encode(ds.sentences1[:n], batch_size=64, convert_to_numpy=True, prompt=s_prompt)
            b = model.encode(ds.sentences2[:n], batch_size=64, convert_to_numpy=True, prompt=s_prompt)
            sts[name] = spearman_cosine(a, b, ds.scores[:n])  # already x100
        return {"scifact_ndcg10": ndcg, "sts": sts, "sts_average": float(np.mean(list(sts.values())))}

    out = scores(query_prompt, sts_prompt)
    if query_prompt or sts_prompt:
        out["without_instructions"] = scores(None, None)
    return out


def mine_both(tmp: str, corpus, negatives: int, candidates: int, max_seq_length: int, ratio: float):
    """embedkit vs sentence-transformers mining on the same corpus, model and rule, cold caches."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from embedkit.training.mining import mine_hard_negatives as ek_mine

    ids, texts = corpus
    load_before = os.getloadavg()
    tr = read_beir(common.scifact_dir(), split="train")
    known = set(ids)
    pairs = [(tr.queries[q], d) for q, rel in tr.qrels.items() for d, r in rel.items()
             if r > 0 and q in tr.queries and d in known]
    model = load_encoder(device="cpu")
    model.max_seq_length = max_seq_length
    old = os.environ.get("EMBEDKIT_CACHE")
    os.environ["EMBEDKIT_CACHE"] = os.path.join(tmp, "cold-cache")  # embedkit pays its own encoding
    t = time.perf_counter()
    mined = ek_mine(pairs, ids, texts, model, num_negatives=negatives, max_positive_ratio=ratio,
                    candidates=candidates, batch_size=32)
    ek_s = time.perf_counter() - t
    if old is None:
        del os.environ["EMBEDKIT_CACHE"]
    else:
        os.environ["EMBEDKIT_CACHE"] = old
    text = dict(zip(ids, texts))
    ds = Dataset.from_dict({"query": [q for q, _ in pairs], "answer": [text[d] for _, d in pairs]})
    t = time.perf_counter()
    st = mine_hard_negatives(ds, model, corpus=texts, num_negatives=negatives, relative_margin=1 - ratio,
                             range_max=candidates, sampling_strategy="top", output_format="n-tuple", batch_size=32,
                             verbose=False)
    st_s = time.perf_counter() - t
    st_negs = {(r["query"], r["answer"]): {r[f"negative_{i + 1}"] for i in range(negatives)} for r in st}
    ek_negs = {(q, text[d]): {text[x] for x in negs} for q, d, negs in
               zip(mined.queries, mined.positive_ids, mined.negative_ids) if len(negs) == negatives}
    both = set(st_negs) & set(ek_negs)
    pos_scores = {}
    for q, s in zip(mined.queries, mined.positive_scores):
        pos_scores.setdefault(q, []).append(s)
    outscoring = sum(s > min(pos_scores[q]) + 1e-6 for q, ss in zip(mined.queries, mined.negative_scores) for s in ss)
    return {"pairs": len(pairs), "corpus": len(ids), "negatives": negatives, "candidates": candidates,
            "max_seq_length": max_seq_length, "embedkit_seconds": ek_s, "sentence_transformers_seconds": st_s,
            "speed_ratio_embedkit_over_st": st_s / ek_s, "embedkit_stats": mined.stats,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "embedkit_pairs_with_all_negatives": len(ek_negs), "st_rows": len(st),
            "same_negatives_share": (sum(st_negs[k] == ek_negs[k] for k in both) / len(both)) if both else None,
            "kept_negatives_outscoring_a_labelled_positive": int(outscoring)}


def recipe(out: str, pooling: str, negatives: str, seed: int, a, beir: str) -> dict:
    """configs/nvembed.yaml with this run's pooling, negatives, seed, sizes and output."""
    r = copy.deepcopy(shipped_recipe())
    r["model"] = "default"
    r["output"] = out
    r["data"]["train"] = beir
    r["data"]["mine"].update(negatives=a.negatives, candidates=a.candidates)
    r["pooling"] = {"name": "mean"} if pooling == "mean" else {**r["pooling"], "num_latents": a.num_latents}
    r["training"].update(seed=seed, batch_size=a.batch_size, max_seq_length=a.max_seq_length,
                         learning_rate=a.lr, epochs=a.epochs, checkpoint_every=10**6, logging_steps=10)
    if a.max_steps:
        r["training"]["max_steps"] = a.max_steps
    sts = r["stages"][1]["data"]["extra"][0]
    sts["mine"].update(negatives=a.negatives, candidates=a.candidates)
    sts["max_sentences"] = a.sts_rows
    if negatives == "inbatch":
        del r["data"]["mine"]  # (query, abstract) pairs only
        r["stages"][1]["loss"] = {"in_batch_negatives": True}  # its retrieval pairs have no other negatives
        r["stages"][1]["sampler"] = {"name": "no_duplicates"}
    return r


def measure_memory() -> dict:
    """Peak RSS of one AdamW step of the pooling module alone vs :func:`latent_attention_training_bytes`."""
    import subprocess

    code = r"""
import json, resource, sys, torch
from embedkit.models.pooling import LatentAttentionPooling
d, r, h, split, rows, n = (int(x) for x in sys.argv[1:7])
torch.manual_seed(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m = LatentAttentionPooling(d, num_latents=r, num_heads=h, head_dim=d // h if split else d, zero_init=False)
opt = torch.optim.AdamW(m.parameters())
x = torch.randn(rows, n, d)
out = m({"token_embeddings": x, "attention_mask": torch.ones(rows, n, dtype=torch.long)})["sentence_embedding"]
out.pow(2).sum().backward()
opt.step()
print(json.dumps({"peak_bytes": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024}))
"""
    from embedkit.models.pooling_size import latent_attention_training_bytes

    out = {}
    for name, (d, r, h, split, rows, n) in {"full_heads_512_latents": (384, 512, 8, 0, 64, 32),
                                            "split_heads_100000_latents": (384, 100_000, 8, 1, 64, 32)}.items():
        res = subprocess.run([sys.executable, "-c", code, *map(str, (d, r, h, split, rows, n))], capture_output=True,
                             text=True, check=True)
        measured = json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"]
        est = latent_attention_training_bytes(d, r, 4, rows=rows, seq_len=n, inner=d if split else h * d)
        out[name] = {"width": d, "num_latents": r, "num_heads": h, "head_width": "split" if split else "full",
                     "rows": rows, "seq_len": n, "measured_peak_bytes": measured, "estimate_bytes": est}
        print(f"{name}: measured {measured / 2**30:.2f} GiB, estimate {est / 2**30:.2f} GiB", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=float, default=1.0, help="per stage (>= 1 for the protocol)")
    ap.add_argument("--max-steps", type=int, default=None, help="per stage; a smoke run (results: *_smoke.json)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--negatives", type=int, default=3)
    ap.add_argument("--candidates", type=int, default=40, help="top documents per query, both miners")
    ap.add_argument("--num-latents", type=int, default=512)
    ap.add_argument("--sts-rows", type=int, default=920,
                    help="stage-2 STS rows (about as many as the 919 retrieval pairs); 0 = all (about 2,800)")
    ap.add_argument("--corpus-docs", type=int, default=None, help="a smaller corpus (judged + random); a smoke run")
    ap.add_argument("--sts-pairs", type=int, default=1000,
                    help="evaluate on the first N pairs of each STS set (0 = all 18,850)")
    ap.add_argument("--remine", action="store_true",
                    help="measure the mining comparison again (e.g. on a quiet machine) and keep finished runs")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated POOLING+NEGATIVES@SEED")
    ap.add_argument("--measure-memory", action="store_true")
    ap.add_argument("--state", default=os.path.join(tempfile.gettempdir(), "embedkit-bench-latent-state.json"),
                    help="finished parts (mining, each run's scores) are kept here: a rerun with the same settings "
                         "skips them, and the results JSON holds every run finished so far (e.g. --runs in two sittings)")
    a = ap.parse_args()
    if a.measure_memory:
        common.write_results("latent_pooling_memory", {"memory": measure_memory()})
        return
    a.sts_rows = a.sts_rows or None
    a.sts_pairs = a.sts_pairs or None
    smoke = bool(a.max_steps or a.corpus_docs)
    from embedkit.training import validate_recipe
    from embedkit.training.run import train_recipe

    runs = [r.strip() for r in a.runs.split(",") if r.strip()]
    settings = {k: v for k, v in vars(a).items() if k not in ("runs", "state", "measure_memory", "remine")}
    state = json.loads(Path(a.state).read_text()) if os.path.exists(a.state) else {}
    if state.get("settings") != settings:
        state = {"settings": settings}

    def keep() -> None:
        Path(a.state).write_text(json.dumps(state))

    tmp = tempfile.mkdtemp(prefix="bench-latent-")
    os.environ.setdefault("EMBEDKIT_CACHE", os.path.join(tmp, "cache"))  # the runs' own mining cache
    q_prompt, sts_prompt = instructions(shipped_recipe())
    results, reports = state.setdefault("results", {}), state.setdefault("reports", {})
    try:
        corpus = corpus_subset(a.corpus_docs, 42)
        beir = str(write_beir_subset(Path(tmp) / "scifact", corpus[0]) if a.corpus_docs else common.scifact_dir())
        if "mining" not in state or a.remine:
            state["mining"] = mine_both(tmp, corpus, a.negatives, a.candidates, a.max_seq_length, 0.95)
            keep()
        mining = state["mining"]
        print(f"mining: embedkit {mining['embedkit_seconds']:.1f}s, ST {mining['sentence_transformers_seconds']:.1f}s, "
              f"same negatives for {mining['same_negatives_share']}", file=sys.stderr)
        if "untrained" not in results:
            results["untrained"] = evaluate(load_encoder(device="cpu"), corpus, None, None, a.sts_pairs)
            keep()
        for run in runs:
            if run in results:
                print(f"{run}: kept from {a.state}", file=sys.stderr)
                continue
            spec, seed = run.split("@")
            pooling, negatives = spec.split("+")
            out = os.path.join(tmp, run.replace("+", "_").replace("@", "_s"))
            t = time.perf_counter()
            train_recipe(validate_recipe(recipe(out, pooling, negatives, int(seed), a, beir), run), show_progress=False)
            train_s = time.perf_counter() - t
            reports[run] = json.loads(Path(out, "train_report.json").read_text())
            results[run] = {**evaluate(load_encoder(out, device="cpu"), corpus, q_prompt, sts_prompt, a.sts_pairs),
                            "train_seconds": train_s, "stage2_steps": reports[run]["global_step"]}
            keep()
            print(f"{run}: nDCG@10 {results[run]['scifact_ndcg10']:.4f} STS {results[run]['sts_average']:.2f} "
                  f"({train_s:.0f}s)", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    payload = {"config": {**vars(a), "model": default_model_path(), "recipe": str(CONFIG.name), "smoke": smoke},
               "mining": mining, "results": results, "targets": targets(results, mining),
               "stage2_mining": {k: r.get("mining") for k, r in reports.items()}, "load_average": common.load_average()}
    common.write_results("latent_pooling_smoke" if smoke else "latent_pooling", payload)
    if not smoke:
        figure(results, a)


def _mean_spread(results: dict, spec: str, key: str):
    vals = [r[key] for k, r in results.items() if k.split("@")[0] == spec]
    return (float(np.mean(vals)), float(max(vals) - min(vals))) if vals else (None, None)


def targets(results: dict, mining: dict) -> dict:
    """The issue's "Shows": mined vs in-batch (mean pooling, seeds averaged, against the seed spread), the
    STS cost, latent vs mean, and the mining speed."""
    t = {"mining_speed_ratio_embedkit_over_st": mining["speed_ratio_embedkit_over_st"],
         "mining_same_negatives_share": mining["same_negatives_share"]}
    ib, ib_spread = _mean_spread(results, "mean+inbatch", "scifact_ndcg10")
    mi, mi_spread = _mean_spread(results, "mean+mined", "scifact_ndcg10")
    if ib is not None and mi is not None:
        t["mined_minus_inbatch_ndcg10_points"] = 100 * (mi - ib)
        t["seed_spread_ndcg10_points"] = 100 * max(ib_spread, mi_spread)
        t["mined_minus_inbatch_sts_average"] = (_mean_spread(results, "mean+mined", "sts_average")[0]
                                               - _mean_spread(results, "mean+inbatch", "sts_average")[0])
    for neg in ("inbatch", "mined"):
        lat, mean = results.get(f"latent_attention+{neg}@42"), results.get(f"mean+{neg}@42")
        if lat and mean:
            t[f"latent_minus_mean_ndcg10_points_{neg}"] = 100 * (lat["scifact_ndcg10"] - mean["scifact_ndcg10"])
    if "untrained" in results:
        u = results["untrained"]["sts_average"]
        trained = [r for k, r in results.items() if k != "untrained"]
        t["worst_sts_change_vs_untrained"] = min((r["sts_average"] - u for r in trained), default=None)
        t["worst_sts_change_vs_untrained_without_instructions"] = min(
            (r["without_instructions"]["sts_average"] - u for r in trained if "without_instructions" in r),
            default=None)
    return t


def figure(results: dict, a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = ["0.6"] + [f"C{i}" for i in range(len(names) - 1)]
    ref = results.get("untrained", {})
    common.zoomed_bars(axes[0], names, [results[n]["scifact_ndcg10"] for n in names], colors,
                       reference=ref.get("scifact_ndcg10"))
    axes[0].set_title("SciFact test nDCG@10 (full corpus)")
    common.zoomed_bars(axes[1], names, [results[n]["sts_average"] for n in names], colors, fmt="%.2f",
                       reference=ref.get("sts_average"))
    axes[1].set_title("STS average (7 test sets)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"all-MiniLM-L6-v2, configs/nvembed.yaml, {a.epochs:g} epoch(s) per stage, batch {a.batch_size}; "
                 "grey and dashed = untrained", fontsize=9)
    fig.tight_layout()
    fig.savefig(common.RESULTS / "latent_pooling.png", dpi=110)


if __name__ == "__main__":
    main()
