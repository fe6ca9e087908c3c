"""Encoding speed and quality: sentence-transformers ``encode`` (the anchor, same run) against embedkit's encoders.

CPU (default): every system encodes the same texts with batch size 32, max length 256 and the same threads,
the systems ALTERNATING round by round, best of ``--rounds`` (3) per system and text set:

* ``st-torch`` — ``SentenceTransformer(all-MiniLM-L6-v2).encode`` (the anchor);
* ``embedkit-torch`` — ``load_encoder()``: the same model through :mod:`embedkit.models.pipeline`;
* ``embedkit-torch-bf16`` — the pipeline under ``torch.autocast("cpu", bfloat16)``;
* ``embedkit-onnx-int8`` — onnxruntime, dynamic per-channel int8;
* ``embedkit-openvino`` / ``embedkit-openvino-bf16`` — OpenVINO on the float ONNX export, fp32 / bf16
  (needs the ``openvino`` extra; skipped with the reason otherwise).

Texts: the first 300 SciFact abstracts (corpus order, truncated at 256 tokens) and the unique sentences of
STS-B test. Quality: mean and min cosine to st-torch, STS-B test Spearman (x100) and its delta to st-torch.

A speed figure needs a quiet machine: the 1-minute load average is read before anything loads (and recorded
again at the end, when it includes this benchmark's own threads); above ``--max-load`` (default: 1 per core)
the script prints why, writes no ratio and exits with status 3. Run it under the shared lock:

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/encode_speed.py            (~5 minutes on 2 cores)

``--device cuda`` (a GPU machine): the whole SciFact corpus (5,183 abstracts, 256 tokens); anchors
sentence-transformers fp32 (batch 128) and fp16 (``model.half()``, batch 512); embedkit's pipeline at fp32,
fp16 and bf16; the forward-only ceiling (pre-tokenized, length-sorted, fp16, no tokenization or copies
timed); 1/2/3/6-layer sub-models through the pipeline (bf16); cosine to fp32 and STS-B per precision.

Writes bench/results/encode_speed.json (CPU) or bench/results/encode_speed_cuda.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 32
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16",
             "amx_int8", "amx_tile")


def cpu_flags() -> list[str]:
    """The SIMD / matrix flags of /proc/cpuinfo that decide which route is fast."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in line.split(":", 1)[1].split() if f in CPU_FLAGS)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu (default) or cuda")
    ap.add_argument("--docs", type=int, default=None, help="SciFact abstracts (default 300 on cpu, all on cuda)")
    ap.add_argument("--sts-pairs", type=int, default=None, help="first N STS-B test pairs (default all 1,379)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; best of them per system")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-load", type=float, default=None,
                    help="refuse to report speed above this 1-minute load (default: 1 per core)")
    ap.add_argument("--systems", default=None, help="comma-separated subset (st-torch is always run)")
    a = ap.parse_args(argv)
    for name in ("docs", "sts_pairs", "rounds", "threads"):
        v = getattr(a, name)
        if v is not None and v < 1:
            ap.error(f"--{name.replace('_', '-')} {v}: must be at least 1")
    if a.max_load is not None and not a.max_load > 0:
        ap.error(f"--max-load {a.max_load}: must be above 0")
    return a


def check_quiet(max_load: float, when: str) -> float:
    """The 1-minute load; exits with status 3 (no ratio written) when it is above ``max_load``."""
    load = os.getloadavg()[0]
    if load > max_load:
        print(f"refusing to report speed: the 1-minute load is {load:.2f} {when} (above {max_load:g}, 1 per core); "
              "wait for a quiet machine and run again", file=sys.stderr)
        sys.exit(3)
    return load


def texts_for(docs: int | None, sts_pairs: int | None):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    from embedkit.data import read_beir
    from embedkit.data.readers import read_sts_tsv

    data = common.data_dir()
    _, doc_texts = read_beir(data / "retrieval" / "scifact").corpus_texts()
    sts = read_sts_tsv(data / "sts" / "stsb.test.tsv")
    if sts_pairs:
        sts.scores, sts.sentences1, sts.sentences2 = (x[:sts_pairs] for x in (sts.scores, sts.sentences1,
                                                                              sts.sentences2))
    sents = list(dict.fromkeys(sts.sentences1 + sts.sentences2))
    return {"docs": doc_texts[:docs] if docs else doc_texts, "sts": sents}, sts


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def quality(vectors: dict, ref: dict, sts) -> dict:
    from scipy.stats import spearmanr

    idx = {s: i for i, s in enumerate(ref["sts_texts"])}
    i1 = np.array([idx[s] for s in sts.sentences1])
    i2 = np.array([idx[s] for s in sts.sentences2])
    out = {}
    for part in ("docs", "sts"):
        cos = (unit(vectors[part]) * unit(ref[part])).sum(1)
        out[f"{part}_cosine_to_fp32_mean"] = round(float(cos.mean()), 6)
        out[f"{part}_cosine_to_fp32_min"] = round(float(cos.min()), 6)
    e = unit(vectors["sts"])
    out["stsb_test_spearman"] = round(float(spearmanr((e[i1] * e[i2]).sum(1), sts.scores)[0]) * 100, 2)
    return out


def alternate(systems: dict, texts: dict, rounds: int) -> tuple[dict, dict]:
    """Best seconds per (system, text set) over ``rounds`` rounds, systems alternating; last vectors."""
    best = {k: {p: float("inf") for p in texts} for k in systems}
    vectors = {k: {} for k in systems}
    for enc in systems.values():  # warm-up: thread pools, first allocations, OpenVINO shape caches
        enc(texts["docs"][:8])
    for _ in range(rounds):
        for name, enc in systems.items():
            for part, t in texts.items():
                start = time.perf_counter()
                v = np.asarray(enc(t), dtype=np.float32)
                best[name][part] = min(best[name][part], time.perf_counter() - start)
                vectors[name][part] = v
    return best, vectors


def cpu_systems(names, threads):
    import torch
    from sentence_transformers import SentenceTransformer

    from embedkit.errors import BackendError
    from embedkit.models.loading import default_model_path, load_encoder

    torch.set_num_threads(threads)
    path = default_model_path()
    st = SentenceTransformer(path, device="cpu")
    systems = {"st-torch": lambda x: st.encode(x, batch_size=BATCH, show_progress_bar=False)}
    skipped = {}
    builders = {
        "embedkit-torch": lambda: load_encoder(device="cpu"),
        "embedkit-torch-bf16": lambda: load_encoder(device="cpu", precision="bf16"),
        "embedkit-onnx-int8": lambda: load_encoder(backend="onnx-int8", threads=threads),
        "embedkit-openvino": lambda: load_encoder(backend="openvino", threads=threads),
        "embedkit-openvino-bf16": lambda: load_encoder(backend="openvino", precision="bf16", threads=threads),
    }
    for name, build in builders.items():
        if names and name not in names:
            continue
        try:
            enc = build()
        except BackendError as e:  # openvino not installed, ...
            skipped[name] = str(e)
            continue
        systems[name] = lambda x, e=enc: e.encode(x, batch_size=BATCH, show_progress_bar=False)
    return systems, skipped, st.max_seq_length


def run_cpu(a) -> None:
    from embedkit.models.onnx import default_threads

    threads = a.threads or default_threads()
    max_load = a.max_load if a.max_load is not None else float(os.cpu_count() or 1)
    load_before = check_quiet(max_load, "at the start")
    texts, sts = texts_for(a.docs or 300, a.sts_pairs)
    names = set(a.systems.split(",")) if a.systems else None
    systems, skipped, max_len = cpu_systems(names, threads)
    best, vectors = alternate(systems, texts, a.rounds)
    load_after = os.getloadavg()[0]  # includes this benchmark's own threads: recorded, not checked
    ref = {**vectors["st-torch"], "sts_texts": texts["sts"]}
    base = best["st-torch"]
    results = {}
    for name in systems:
        res = {f"{p}_seconds": round(best[name][p], 3) for p in texts}
        res.update({f"{p}_texts_per_s": round(len(texts[p]) / best[name][p], 2) for p in texts})
        res.update({f"speedup_{p}": round(base[p] / best[name][p], 3) for p in texts})
        res.update(quality(vectors[name], ref, sts))
        results[name] = res
    for res in results.values():
        res["stsb_delta_points"] = round(res["stsb_test_spearman"] - results["st-torch"]["stsb_test_spearman"], 2)
    write("encode_speed", {
        "settings": {"device": "cpu", "model": "all-MiniLM-L6-v2", "batch_size": BATCH, "max_seq_length": max_len,
                     "threads": threads, "rounds": a.rounds, "timing": "best of rounds, systems alternating",
                     "scifact_docs": len(texts["docs"]), "sts_sentences": len(texts["sts"]),
                     "cpu_flags": cpu_flags(), "load_1min_before": round(load_before, 2),
                     "load_1min_after": round(load_after, 2), "load_average_end": list(os.getloadavg()),
                     "max_load": max_load},
        "systems": results, "skipped": skipped})


def run_cuda(a) -> None:  # pragma: no cover - needs a GPU
    import torch
    from sentence_transformers import SentenceTransformer

    from embedkit.models.loading import default_model_path, load_encoder
    from embedkit.models.pipeline import plan_batches

    if not torch.cuda.is_available():
        print("--device cuda: this machine has no CUDA GPU", file=sys.stderr)
        sys.exit(2)
    texts, sts = texts_for(a.docs, a.sts_pairs)
    path = default_model_path()
    st32 = SentenceTransformer(path, device="cuda")
    st16 = SentenceTransformer(path, device="cuda").half()
    systems = {"st-fp32-b128": lambda x: st32.encode(x, batch_size=128, show_progress_bar=False),
               "st-fp16-b512": lambda x: st16.encode(x, batch_size=512, show_progress_bar=False)}
    for p in ("fp32", "fp16", "bf16"):
        m = load_encoder(device="cuda", precision=p)
        systems[f"embedkit-{p}"] = lambda x, m=m: m.encode(x, batch_size=128, show_progress_bar=False)
    for layers in (1, 2, 3, 6):
        m = load_encoder(device="cuda", precision="bf16", layers=layers)
        systems[f"embedkit-bf16-L{layers}"] = lambda x, m=m: m.encode(x, batch_size=128, show_progress_bar=False)
    best, vectors = alternate(systems, texts, a.rounds)
    # the forward-only ceiling: pre-tokenized length-sorted batches already on the GPU, fp16
    ceiling = {}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        for part, t in texts.items():
            feats = st32.preprocess(t)
            lengths = feats["attention_mask"].sum(1).numpy()
            batches = [{k: v[rows][:, : int(lengths[rows].max())].cuda() if isinstance(v, torch.Tensor) else v
                        for k, v in feats.items()} for rows in plan_batches(lengths, None, 128 * 256)]
            torch.cuda.synchronize()
            start = time.perf_counter()
            for b in batches:
                st32(b)
            torch.cuda.synchronize()
            ceiling[part] = len(t) / (time.perf_counter() - start)
    ref = {**vectors["st-fp32-b128"], "sts_texts": texts["sts"]}
    base = best["st-fp32-b128"]
    results = {}
    for name in systems:
        res = {f"{p}_texts_per_s": round(len(texts[p]) / best[name][p], 1) for p in texts}
        res.update({f"speedup_{p}": round(base[p] / best[name][p], 3) for p in texts})
        res.update(quality(vectors[name], ref, sts))
        results[name] = res
    results["forward-only-fp16"] = {f"{p}_texts_per_s": round(v, 1) for p, v in ceiling.items()}
    write("encode_speed_cuda", {
        "settings": {"device": torch.cuda.get_device_name(0), "model": "all-MiniLM-L6-v2", "rounds": a.rounds,
                     "scifact_docs": len(texts["docs"]), "sts_sentences": len(texts["sts"]),
                     "cpu_flags": cpu_flags(), "load_average": list(os.getloadavg())},
        "systems": results})


def write(name: str, payload: dict) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    common.write_results(name, payload)
    print(json.dumps(payload, indent=1))


def main(argv=None) -> None:
    a = parse_args(argv)
    if a.device == "cuda":
        run_cuda(a)
    else:
        run_cpu(a)


if __name__ == "__main__":
    main()
