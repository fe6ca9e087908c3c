"""Evaluation suite bench: one cached run over 5 compression specs vs 5 separate uncached runs.

Suite (default model all-MiniLM-L6-v2, local files as mteb tasks):
  STS-B test (1,379 pairs), SICK-R test (first 1,000 pairs), SciFact (first 60 judged queries,
  300 documents incl. every judged one), AG News test.tsv classification (1,000 rows, 50/50 split)
  and clustering (1,000 rows).
Specs: float;int8;binary;mrl:128;mrl:128,binary.

Timings (wall clock, whole suite incl. mteb scoring):
  * separate: 5 runs, one spec each, with the embedding cache off (``cache=False``): every run
    encodes every text again (each run still runs the float pass the spec is fitted on; within one
    run a text is encoded once);
  * cold: one 5-spec run with an empty cache folder (each text encoded once, then cached);
  * warm: the same run again on that cache (no text encoded).

Equality checks on the full data (cached embeddings of the default model):
  * STS-B and SICK-R test: mteb's cosine_spearman x100 vs embedkit.evaluation.sts.spearman_cosine;
  * SciFact (300 queries, 5,183 documents): mteb's nDCG@10 vs the foundation's index eval on the
    float index (0.6451).

Run: flock /tmp/embedkit-cpu.lock .venv/bin/python bench/eval_suite.py   (``--plot-only`` redraws the PNG)
Writes bench/results/eval_suite.json (+ eval_suite.png, eval_suite.md).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import RESULTS, machine_info, write_results  # noqa: E402

SPECS = ["float", "int8", "binary", "mrl:128", "mrl:128,binary"]
CAPTION = ("Data (local files as mteb tasks): STS-B test (all 1,379 pairs); SICK-R test (first 1,000 pairs); "
           "SciFact SUBSET: first 60 judged test queries x 300 documents (every judged one + others), so nDCG is "
           "higher than on the full corpus (0.6451); AG News test, first 1,000 rows (classification 50/50 split, "
           "clustering). No anchor: every point is one of embedkit's specs.")


def suite_tasks(d: Path):
    from embedkit.evaluation import mteb_tasks as mt

    return [
        mt.sts_task(d / "sts" / "stsb.test.tsv"),
        mt.sts_task(d / "sts" / "sickr.test.tsv", max_rows=1000),
        mt.retrieval_task(d / "retrieval" / "scifact", max_queries=60, max_docs=300),
        mt.classification_task(d / "topics" / "ag_news" / "test.tsv", max_rows=1000),
        mt.clustering_task(d / "topics" / "ag_news" / "test.tsv", max_rows=1000),
    ]


def equality_checks(model, d: Path) -> dict:
    from embedkit.cache import encode_cached
    from embedkit.data import read_beir, read_sts_tsv
    from embedkit.evaluation import mteb_tasks as mt
    from embedkit.evaluation.retrieval import evaluate_index
    from embedkit.evaluation.sts import spearman_cosine
    from embedkit.evaluation.suite import run_suite
    from embedkit.retrieval.index import EmbeddingIndex

    out: dict = {"sts": {}}
    for name in ("stsb", "sickr"):
        path = d / "sts" / f"{name}.test.tsv"
        ds = read_sts_tsv(path)
        ref = spearman_cosine(encode_cached(model, ds.sentences1, show_progress=False),
                              encode_cached(model, ds.sentences2, show_progress=False), ds.scores)
        got = 100 * run_suite(model, [mt.sts_task(path)], "float", show_progress=False)["rows"][0]["main_score"]
        out["sts"][name] = {"mteb_x100": got, "scipy_x100": ref, "abs_diff": abs(got - ref), "pairs": len(ds)}
    beir = read_beir(d / "retrieval" / "scifact")
    ids, texts = beir.corpus_texts()
    index = EmbeddingIndex.build(texts, ids, model=model, spec="float", show_progress=False)
    ref = evaluate_index(index, beir.queries, beir.qrels)["ndcg@10"]
    got = run_suite(model, [mt.retrieval_task(d / "retrieval" / "scifact")], "float", show_progress=False)["rows"][0]["main_score"]
    out["scifact"] = {"mteb_ndcg@10": got, "index_eval_ndcg@10": ref, "abs_diff": abs(got - ref),
                      "queries": len(beir.judged_queries()[0]), "documents": len(ids)}
    return out


def main() -> None:
    if "--plot-only" in sys.argv:  # redraw eval_suite.png from eval_suite.json
        import json

        from embedkit.evaluation.suite import plot_summary

        res = json.loads((RESULTS / "eval_suite.json").read_text())
        plot_summary({"tasks": res["suite"], "model": res["model"], "rows": res["rows"]}, RESULTS / "eval_suite.png",
                     caption=CAPTION)
        return
    from embedkit import load_encoder
    from embedkit._io import data_dir
    from embedkit.evaluation.suite import plot_summary, run_suite, summary_markdown

    d = data_dir()
    model = load_encoder()
    checks = equality_checks(model, d)
    print("equality checks:", checks, flush=True)

    tasks = suite_tasks(d)
    separate = {}
    t_sep = time.perf_counter()
    for spec in SPECS:
        t = time.perf_counter()
        res = run_suite(model, tasks, spec, cache=False, show_progress=False)
        separate[spec] = {"seconds": time.perf_counter() - t, "texts_encoded": res["texts_encoded"],
                          "scores": {r["task"]: r["main_score"] for r in res["rows"] if r["spec"] == spec}}
        print(f"separate uncached run {spec}: {separate[spec]['seconds']:.1f} s", flush=True)
    separate_total = time.perf_counter() - t_sep

    from embedkit.cache import EmbeddingCache

    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp)
        t = time.perf_counter()
        cold = run_suite(model, tasks, ";".join(SPECS), cache=cache, show_progress=False)
        cold_s = time.perf_counter() - t
        print(f"one 5-spec run, cold cache: {cold_s:.1f} s", flush=True)
        t = time.perf_counter()
        warm = run_suite(model, tasks, ";".join(SPECS), cache=EmbeddingCache(tmp), show_progress=False)
        warm_s = time.perf_counter() - t
        print(f"one 5-spec run, warm cache: {warm_s:.1f} s", flush=True)

    # the cached run scores exactly what the separate runs score
    max_diff = max(abs(separate[r["spec"]]["scores"][r["task"]] - r["main_score"]) for r in warm["rows"])
    payload = {
        "machine": machine_info(),
        "model": warm["model"], "specs": SPECS,
        "suite": [{"task": t["task"], "type": t["type"], "metric": t["metric"]} for t in warm["tasks"]],
        "equality_checks": checks,
        "timing": {
            "separate_uncached_total_s": separate_total,
            "separate_uncached_per_spec_s": {k: v["seconds"] for k, v in separate.items()},
            "cached_cold_s": cold_s, "cached_warm_s": warm_s,
            "speedup_cold": separate_total / cold_s, "speedup_warm": separate_total / warm_s,
            "texts_encoded_separate": sum(v["texts_encoded"] for v in separate.values()),
            "texts_encoded_cached_run": cold["texts_encoded"],
        },
        "max_score_diff_cached_vs_separate": max_diff,
        "rows": warm["rows"],
        "table_markdown": summary_markdown(warm),
    }
    write_results("eval_suite", payload)
    plot_summary(warm, RESULTS / "eval_suite.png", caption=CAPTION)
    (RESULTS / "eval_suite.md").write_text(summary_markdown(warm))
    print(summary_markdown(warm))
    print(f"separate {separate_total:.1f} s, cold {cold_s:.1f} s ({separate_total / cold_s:.2f}x), "
          f"warm {warm_s:.1f} s ({separate_total / warm_s:.2f}x); max score diff {max_diff:.2e}")


if __name__ == "__main__":
    main()
