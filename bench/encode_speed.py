"""Encoding speed and quality: sentence-transformers torch (anchor) vs embedkit's ONNX Runtime backends.

Every system encodes the same texts with the same batch size (32), max length (the model's, 256) and
thread count, in one run:

* ``st-torch`` — ``SentenceTransformer(all-MiniLM-L6-v2)`` (the anchor; ``embedkit.load_encoder()`` returns
  this very object, so "embedkit torch" is the same numbers);
* ``embedkit-onnx`` / ``embedkit-onnx-int8`` — ``load_encoder(backend="onnx" | "onnx-int8")``;
* ``st-onnx`` / ``st-onnx-int8`` — sentence-transformers' own ``backend="onnx"`` and its
  ``export_dynamic_quantized_onnx_model(..., "avx2")``, the second anchor. It needs optimum, which pins
  transformers < 4.58, so it runs in a separate virtual environment (EMBEDKIT_ST_ONNX_PYTHON, default
  /tmp/st-onnx-venv/bin/python) made with::

      python -m venv /tmp/st-onnx-venv
      /tmp/st-onnx-venv/bin/pip install --no-deps sentence-transformers==5.1.2 transformers==4.57.1 \\
          tokenizers==0.22.1 huggingface_hub==0.36.0 optimum==2.0.0 optimum-onnx==0.1.0 datasets==3.6.0 fsspec==2025.3.0
      echo $PWD/.venv/lib/python3.11/site-packages > /tmp/st-onnx-venv/lib/python3.11/site-packages/zz_main.pth

  (torch, onnxruntime and numpy come from the main environment through the .pth file.) Without it the
  JSON records why the anchor is missing.

Measured: texts/s on SciFact abstracts (a 300-document subset: the relevant documents of the first test
queries plus distractors) and on the unique sentences of STS-B test; single-query latency p50/p99 (50
SciFact queries, one at a time); mean cosine to st-torch; STS-B test Spearman; nDCG@10 on the SciFact
subset (only the queries whose relevant documents are all in it; higher than full-corpus numbers, for
comparing systems only); cold start (a fresh process: import + load + first query).

Run:  flock /tmp/embedkit-cpu.lock .venv/bin/python bench/encode_speed.py     (8-10 minutes on 2 shared cores)
Writes bench/results/encode_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 32
ST_ONNX_PY = os.environ.get("EMBEDKIT_ST_ONNX_PYTHON", "/tmp/st-onnx-venv/bin/python")


def measure(encode, texts: dict, n_latency: int) -> dict:
    """Time one system: encode() on docs, queries and STS sentences; single-query latency."""
    encode(texts["docs"][:8])  # warm-up (first-run allocations, thread pools)
    out, res = {}, {}
    for part in ("docs", "sts"):
        t = time.perf_counter()
        out[part] = np.asarray(encode(texts[part]), dtype=np.float32)
        dt = time.perf_counter() - t
        res[f"{part}_seconds"] = round(dt, 3)
        res[f"{part}_texts_per_s"] = round(len(texts[part]) / dt, 2)
    out["queries"] = np.asarray(encode(texts["queries"]), dtype=np.float32)
    lat = []
    for q in texts["queries"][:n_latency]:
        t = time.perf_counter()
        encode([q])
        lat.append((time.perf_counter() - t) * 1000)
    res["latency_ms_p50"] = round(float(np.percentile(lat, 50)), 2)
    res["latency_ms_p99"] = round(float(np.percentile(lat, 99)), 2)
    return {"timing": res, "vectors": out}


def st_onnx_worker(model_dir: str, texts_file: str, out_dir: str, n_latency: int, threads: int) -> None:
    """Runs inside the sentence-transformers + optimum environment (no embedkit import)."""
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    texts = json.loads(Path(texts_file).read_text())
    report = {}
    kw = {"provider": "CPUExecutionProvider"}
    t = time.perf_counter()
    model = SentenceTransformer(model_dir, backend="onnx", device="cpu", model_kwargs=kw)
    saved = model_dir.rstrip("/") + "-st-onnx"
    model.save_pretrained(saved)
    export_s = time.perf_counter() - t
    t = time.perf_counter()
    export_dynamic_quantized_onnx_model(model, "avx2", saved)
    quant_s = time.perf_counter() - t
    qfile = next(p.name for p in Path(saved, "onnx").glob("model_*int8_avx2.onnx"))  # quint8 in ST 5.1
    report["quantized_file"] = qfile
    systems = {"st-onnx": model}
    systems["st-onnx-int8"] = SentenceTransformer(saved, backend="onnx", device="cpu",
                                                  model_kwargs={**kw, "file_name": f"onnx/{qfile}"})
    for name, m in systems.items():
        r = measure(lambda x, m=m: m.encode(list(x), batch_size=BATCH, show_progress_bar=False), texts, n_latency)
        r["timing"]["export_seconds"] = round(export_s if name == "st-onnx" else quant_s, 2)
        for part, v in r["vectors"].items():
            np.save(Path(out_dir) / f"{name}.{part}.npy", v)
        report[name] = r["timing"]
    import sentence_transformers
    import transformers

    report["versions"] = {"sentence-transformers": sentence_transformers.__version__,
                          "transformers": transformers.__version__}
    Path(out_dir, "report.json").write_text(json.dumps(report))


def cold_start(code: str) -> dict:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    wall = time.perf_counter() - t
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    info = json.loads(p.stdout.strip().splitlines()[-1])
    return {"process_seconds": round(wall, 2), **info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--latency-queries", type=int, default=50)
    ap.add_argument("--sts-pairs", type=int, default=None, help="first N STS-B test pairs (default all 1,379)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-st-onnx", action="store_true")
    ap.add_argument("--worker", nargs=5, metavar=("MODEL", "TEXTS", "OUT", "N", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        st_onnx_worker(a.worker[0], a.worker[1], a.worker[2], int(a.worker[3]), int(a.worker[4]))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    from embedkit.data import read_beir
    from embedkit.data.readers import read_sts_tsv
    from embedkit.models.loading import default_model_path
    from embedkit.models.onnx import default_threads, load_onnx_encoder
    from embedkit.models.onnx_export import INT8_SETTINGS, default_export_root
    from embedkit.retrieval.metrics import ndcg_at_k

    threads = a.threads or default_threads()
    torch.set_num_threads(threads)
    data = common.data_dir()
    # --- texts ---
    ds = read_beir(data / "retrieval" / "scifact")
    doc_ids_all, doc_texts_all = ds.corpus_texts()
    pos = {d: i for i, d in enumerate(doc_ids_all)}
    chosen, eval_q = [], []
    for q in ds.qrels:
        rel = [d for d in ds.qrels[q] if d in pos]
        if len(set(chosen) | set(rel)) > (2 * a.docs) // 3:
            break
        chosen += [d for d in rel if d not in chosen]
        eval_q.append(q)
    chosen += [d for d in doc_ids_all if d not in set(chosen)][: a.docs - len(chosen)]
    docs = [doc_texts_all[pos[d]] for d in chosen]
    queries = [ds.queries[q] for q in eval_q]
    sts = read_sts_tsv(data / "sts" / "stsb.test.tsv")
    if a.sts_pairs:
        sts.scores, sts.sentences1, sts.sentences2 = (x[: a.sts_pairs] for x in (sts.scores, sts.sentences1,
                                                                                  sts.sentences2))
    sts_sents = list(dict.fromkeys(sts.sentences1 + sts.sentences2))
    texts = {"docs": docs, "queries": queries, "sts": sts_sents}
    n_lat = min(a.latency_queries, len(queries))

    model_path = default_model_path()
    export_root = default_export_root()
    results, vectors = {}, {}

    # --- systems in this environment ---
    t = time.perf_counter()
    st = SentenceTransformer(model_path, device="cpu")
    load_s = time.perf_counter() - t
    r = measure(lambda x: st.encode(list(x), batch_size=BATCH, show_progress_bar=False), texts, n_lat)
    results["st-torch"], vectors["st-torch"] = {**r["timing"], "load_seconds": round(load_s, 2)}, r["vectors"]
    max_len = st.max_seq_length
    for backend in ("onnx", "onnx-int8"):
        t = time.perf_counter()
        enc = load_onnx_encoder(None, backend=backend, threads=threads, export_root=export_root)
        load_s = time.perf_counter() - t
        assert enc.max_seq_length == max_len
        r = measure(lambda x, e=enc: e.encode(list(x), batch_size=BATCH), texts, n_lat)
        name = f"embedkit-{backend}"
        results[name] = {**r["timing"], "load_or_export_seconds": round(load_s, 2)}
        vectors[name] = r["vectors"]
        del enc

    # --- second anchor: sentence-transformers' own ONNX backend, separate environment ---
    if a.skip_st_onnx:
        results["st-onnx"] = {"skipped": "--skip-st-onnx"}
    elif not Path(ST_ONNX_PY).exists():
        results["st-onnx"] = {"skipped": f"{ST_ONNX_PY} missing: sentence-transformers' backend='onnx' needs optimum, "
                                         "which pins transformers < 4.58 (see this script's docstring)"}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            import shutil

            mdir = Path(tmp) / "model"
            shutil.copytree(model_path, mdir, ignore=shutil.ignore_patterns(".embedkit-onnx", "onnx"))
            (Path(tmp) / "texts.json").write_text(json.dumps(texts))
            p = subprocess.run([ST_ONNX_PY, __file__, "--worker", str(mdir), str(Path(tmp) / "texts.json"), tmp,
                                str(n_lat), str(threads)], capture_output=True, text=True, timeout=900,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
            if p.returncode != 0:
                results["st-onnx"] = {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}
            else:
                rep = json.loads((Path(tmp) / "report.json").read_text())
                st_versions = rep.pop("versions")
                st_versions["quantized_file"] = rep.pop("quantized_file")
                for name, timing in rep.items():
                    results[name] = {**timing, "environment": st_versions}
                    vectors[name] = {part: np.load(Path(tmp) / f"{name}.{part}.npy") for part in texts}

    # --- agreement and quality ---
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sidx = {s: i for i, s in enumerate(sts_sents)}
    i1 = np.array([sidx[s] for s in sts.sentences1])
    i2 = np.array([sidx[s] for s in sts.sentences2])
    qrels = {q: ds.qrels[q] for q in eval_q}
    ref = vectors["st-torch"]
    for name, v in vectors.items():
        res = results[name]
        for part in ("docs", "sts"):
            cos = (unit(v[part]) * unit(ref[part])).sum(1)
            res[f"{part}_cosine_to_torch_mean"] = round(float(cos.mean()), 6)
            res[f"{part}_cosine_to_torch_min"] = round(float(cos.min()), 6)
        e = unit(v["sts"])
        res["stsb_test_spearman"] = round(float(spearmanr((e[i1] * e[i2]).sum(1), sts.scores)[0]) * 100, 2)
        scores = unit(v["queries"]) @ unit(v["docs"]).T
        run = {}
        for qi, q in enumerate(eval_q):
            top = np.argsort(-scores[qi])[:100]
            run[q] = {chosen[j]: float(scores[qi, j]) for j in top}
        res["scifact_subset_ndcg10"] = round(float(ndcg_at_k(run, qrels, 10)), 4)
    base = results["st-torch"]
    for res in results.values():
        if "docs_texts_per_s" in res:
            res["speedup_docs"] = round(res["docs_texts_per_s"] / base["docs_texts_per_s"], 3)
            res["speedup_sts"] = round(res["sts_texts_per_s"] / base["sts_texts_per_s"], 3)
            res["latency_p50_ratio"] = round(res["latency_ms_p50"] / base["latency_ms_p50"], 3)

    # --- cold start of a query server: import + load + first query in a fresh process ---
    cold = {
        "st-torch": cold_start(
            "import json,sys,time; t=time.perf_counter(); from sentence_transformers import SentenceTransformer; "
            f"m=SentenceTransformer({model_path!r}, device='cpu'); m.encode(['a query']); "
            "print(json.dumps({'seconds': round(time.perf_counter()-t, 2), 'torch_imported': 'torch' in sys.modules}))"),
        "embedkit-onnx-int8": cold_start(
            "import json,sys,time; t=time.perf_counter(); from embedkit.models.onnx import load_onnx_encoder; "
            f"e=load_onnx_encoder(None, backend='onnx-int8', export_root={str(export_root)!r}); e.encode(['a query']); "
            "print(json.dumps({'seconds': round(time.perf_counter()-t, 2), 'torch_imported': 'torch' in sys.modules}))"),
    }
    common.write_results("encode_speed", {
        "settings": {"model": "all-MiniLM-L6-v2", "batch_size": BATCH, "max_seq_length": max_len, "threads": threads,
                     "scifact_docs": len(docs), "scifact_eval_queries": len(eval_q), "sts_sentences": len(sts_sents),
                     "latency_queries": n_lat, "int8_settings": INT8_SETTINGS,
                     "cpu_flags": _cpu_flags(), "note": "shared 2-core machine: compare ratios, not absolute times"},
        "systems": results,
        "cold_start": cold,
    })
    print(json.dumps({"systems": results, "cold_start": cold}, indent=1))


def _cpu_flags() -> list[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags.split(":", 1)[1].split() if f in ("avx2", "fma", "avx512f", "avx512_vnni",
                                                                    "avx_vnni", "amx_int8"))


if __name__ == "__main__":
    main()
