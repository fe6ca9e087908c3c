"""ESimCSE under DistributedDataParallel: does 2 processes x 32 train like 1 process x 64?

Runs (same base all-MiniLM-L6-v2, data, seed, learning rate and number of optimizer steps):
  a  1 process,  batch 64
  b  2 processes x batch 32, gathering across ranks (the default): global batch 64, global negatives
     and a global queue of 160
  c  2 processes x batch 32, no gathering: each rank sees 31 in-batch negatives and its own queue of 80

For each: Spearman x100 on the 7 STS test sets and their average, and optimizer steps/s (between the
first and the last step, rank 0). On a 2-core CPU the point is quality, (b) == (a), not speed; on a
GPU machine run it with ``--device cuda`` for the (a)/(b) throughput.

    flock /tmp/embedkit-cpu.lock .venv/bin/python bench/train_ddp.py                 # 100 steps, ~30 min on 2 cores
    .venv/bin/python bench/train_ddp.py --steps 20 --no-eval --name train_ddp_smoke   # sizing

The workers are this script in ``--worker`` mode, started by torchrun's launcher
(:func:`embedkit.training.distributed.launch_workers`); they run the same trainer as
``embedkit train`` (:class:`~embedkit.training.trainer.EmbedkitTrainer`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402,F401  (sets offline env vars)

RUNS = [
    ("a", "1 process x 64", 1, 64, True),
    ("b", "2 processes x 32, gathered", 2, 32, True),
    ("c", "2 processes x 32, not gathered", 2, 32, False),
]


def worker(cfg_path: str) -> None:
    """One rank of one run (under torchrun)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    from embedkit.models.loading import load_encoder
    from embedkit.training import distributed
    from embedkit.training.losses import ESimCSELoss
    from embedkit.training.recipe import resolve_path
    from embedkit.training.trainer import EmbedkitTrainer

    cfg = json.loads(open(cfg_path).read())
    from embedkit.data import read_text_lines

    texts = [t.strip() for t in read_text_lines(resolve_path(cfg["data"])) if t.strip()]
    torch.manual_seed(cfg["seed"])
    model = load_encoder(cfg["model"], device=cfg["device"]) if cfg["device"] else load_encoder(cfg["model"])
    model.max_seq_length = cfg["max_seq_length"]
    loss = ESimCSELoss(model, gather_across_devices=cfg["gather"])
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    args = SentenceTransformerTrainingArguments(
        output_dir=cfg["ckpt"], use_cpu=cfg["device"] == "cpu", seed=cfg["seed"], data_seed=cfg["seed"],
        per_device_train_batch_size=cfg["batch"], learning_rate=cfg["lr"], max_steps=cfg["steps"],
        save_strategy="no", logging_steps=max(1, cfg["steps"] // 4), report_to="none", disable_tqdm=True,
        dataloader_drop_last=True)
    trainer = EmbedkitTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}), loss=loss,
                              callbacks=[Timer()])
    trainer.train()
    if distributed.is_main_process():
        model.save(cfg["out"])
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
        with open(os.path.join(cfg["out"], "timing.json"), "w") as f:
            json.dump({"steps": len(times), "steps_per_second": rate,
                       "queue_rows": None if loss.queue is None else int(loss.queue.shape[0])}, f)


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="  %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-seq-length", type=int, default=32)
    ap.add_argument("--data", default="data:unlabeled/wiki1m_head.txt.gz")
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    ap.add_argument("--runs", default="a,b,c")
    ap.add_argument("--no-eval", action="store_true", help="timing only (for sizing)")
    ap.add_argument("--name", default="train_ddp", help="results file name (bench/results/NAME.json)")
    a = ap.parse_args()
    if a.worker:
        worker(a.worker)
        return

    from embedkit.evaluation.sts import evaluate_sts
    from embedkit.models.loading import load_encoder
    from embedkit.training.distributed import launch_workers

    work = tempfile.mkdtemp(prefix="embedkit-train-ddp-")
    results: dict = {}
    before = None
    if not a.no_eval:
        before = evaluate_sts(load_encoder(a.model), show_progress=False)
        print(f"base: STS average {before['average']:.2f}", flush=True)
    try:
        for key, label, nproc, batch, gather in RUNS:
            if key not in a.runs.split(","):
                continue
            out = os.path.join(work, key)
            cfg = {"model": a.model, "data": a.data, "seed": a.seed, "lr": a.lr, "steps": a.steps, "batch": batch,
                   "max_seq_length": a.max_seq_length, "gather": gather, "out": out, "ckpt": out + ".ckpt",
                   "device": a.device}
            cfg_path = os.path.join(work, f"{key}.json")
            with open(cfg_path, "w") as f:
                json.dump(cfg, f)
            t = time.perf_counter()
            env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))} if a.device == "cpu" else {}
            launch_workers([sys.executable, os.path.abspath(__file__), "--worker", cfg_path], nproc, env=env)
            wall = time.perf_counter() - t
            timing = json.loads(open(os.path.join(out, "timing.json")).read())
            row = {"label": label, "processes": nproc, "batch_per_process": batch, "global_batch": nproc * batch,
                   "gather_across_devices": gather, "wall_seconds": round(wall, 1), **timing}
            if not a.no_eval:
                row["sts"] = evaluate_sts(load_encoder(out), cache=False, show_progress=False)
            results[key] = row
            avg = f", STS avg {row['sts']['average']:.2f}" if "sts" in row else ""
            print(f"{key} {label}: {timing['steps_per_second']:.3f} steps/s, queue {timing['queue_rows']}{avg}",
                  flush=True)
            common.write_results(a.name + ".partial", {"sts_before": before, "runs": results})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.write_results(a.name, {"config": vars(a) | {"worker": None}, "sts_before": before, "runs": results})


if __name__ == "__main__":
    main()
