"""The sentence-transformers trainer with what embedkit's recipes need on top.

:class:`EmbedkitTrainer` is a ``SentenceTransformerTrainer`` (so torchrun/accelerate multi-GPU
works unchanged) that adds:

* callbacks a loss asks for (``loss.callbacks()``, e.g. ESimCSE's per-step EMA);
* loss state in every checkpoint (``loss.save_training_state`` / ``load_training_state``: the
  ESimCSE momentum encoder and queue), so resumed runs continue exactly;
* atomic checkpoints: a checkpoint folder counts only once its marker file
  ``embedkit_checkpoint.json`` has been written (write-to-temp + rename) after every other file;
  :func:`latest_checkpoint` ignores folders without it (e.g. after a kill -9 mid-save), and old
  complete checkpoints are removed only after a newer one is complete.
* multi-process training (torchrun / DDP, see :mod:`embedkit.training.distributed`): every batch
  sampler is built at the global batch size and cut into one disjoint slice per rank
  (:class:`~embedkit.training.samplers.GlobalBatchSplitter`); checkpoints are written by rank 0
  only (the RNG states of all ranks are gathered to it), and record the process count and batch
  sizes; ``--resume`` accepts a different process count when the global batch is unchanged and
  otherwise raises :class:`~embedkit.errors.DistributedError` saying which batch size to set.

:class:`StsEvaluator` runs :func:`embedkit.evaluation.sts.evaluate_sts` (the evaluator shared with
``embedkit eval``) as a sentence-transformers evaluator for periodic evaluation and best-checkpoint
selection.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformerTrainer
from sentence_transformers.base.evaluation import BaseEvaluator
from transformers import TrainerCallback

from embedkit._io import atomic_write_json
from embedkit.validation import check_positive_int

logger = logging.getLogger(__name__)

__all__ = ["MARKER", "EmbedkitTrainer", "StderrProgressCallback", "StsEvaluator", "check_resume_compatible",
           "checkpoint_info", "complete_checkpoints", "latest_checkpoint"]

MARKER = "embedkit_checkpoint.json"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders in ``folder`` (those with the marker), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir() and (p / MARKER).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``folder``, or None."""
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def checkpoint_info(checkpoint: str | os.PathLike) -> dict:
    """The marker of a complete checkpoint: ``global_step``, ``world_size``, ``per_device_batch_size``,
    ``global_batch_size`` (the last three absent in checkpoints of older versions)."""
    import json

    with open(os.path.join(checkpoint, MARKER)) as f:
        return json.load(f)


def check_resume_compatible(checkpoint: str | os.PathLike, world_size: int, per_device_batch_size: int,
                            gradient_accumulation_steps: int = 1) -> None:
    """Refuse to resume ``checkpoint`` when this run's global batch differs from the checkpoint's.

    Resuming with another process count is fine when the global batch (processes x per-process
    batch x accumulation) is the same: the data order, the position in it and the loss state
    (ESimCSE's queue holds the global batches) carry over. Dropout and word-repetition draws then
    continue from rank 0's random state, so the result is not bit-identical to an uninterrupted run.

    Raises:
        DistributedError: the global batch differs; the message says which ``training.batch_size``
            or ``--nproc`` resumes it.
    """
    from embedkit.errors import DistributedError

    info = checkpoint_info(checkpoint)
    w_old = int(info.get("world_size", 1))
    g_old = info.get("global_batch_size")
    g_new = world_size * per_device_batch_size * gradient_accumulation_steps
    if g_old is None or int(g_old) == g_new:
        if w_old != world_size:
            logger.warning("resuming %s (written by %d process(es)) with %d process(es): same global batch %d; "
                           "random augmentation draws continue from rank 0's state", Path(checkpoint).name,
                           w_old, world_size, g_new)
        return
    g_old = int(g_old)
    per = g_old / (world_size * gradient_accumulation_steps)
    hint = f"set training.batch_size to {int(per)}" if per.is_integer() and per >= 1 else \
        f"resume with --nproc {w_old}"
    raise DistributedError(
        f"{Path(checkpoint).name}: written by {w_old} process(es) x batch {info.get('per_device_batch_size')} "
        f"(global batch {g_old}), this run has {world_size} x {per_device_batch_size} (global batch {g_new}); "
        f"the data position and the loss state depend on the global batch: {hint}, or --nproc {w_old} with the "
        "recipe's batch size")


class StsEvaluator(BaseEvaluator):
    """Spearman x100 of cosine similarity on STS sets, averaged; primary metric ``spearman``."""

    def __init__(self, sets: Sequence[Any], name: str = "sts-dev", batch_size: int = 64) -> None:
        super().__init__()
        from embedkit.evaluation.sts import load_sts_sets

        self.sets = load_sts_sets(list(sets))
        self.name = name
        self.batch_size = batch_size
        self.primary_metric = "spearman"
        self.greater_is_better = True

    def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        from embedkit.evaluation.sts import evaluate_sts

        res = evaluate_sts(model, self.sets, batch_size=self.batch_size, cache=False)
        metrics = {"spearman": res["average"]}
        if len(self.sets) > 1:
            metrics.update({f"spearman_{k}": v for k, v in res.items() if k != "average"})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


class StderrProgressCallback(TrainerCallback):
    """A tqdm bar on stderr, and one log record per evaluation (logger ``embedkit.training.trainer``)."""

    def __init__(self, bar: bool = True) -> None:
        self.bar = bar
        self._pbar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.bar and state.is_world_process_zero:
            from tqdm.auto import tqdm

            self._pbar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                              file=sys.stderr, dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self._pbar is not None:
            self._pbar.update(state.global_step - self._pbar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs and self._pbar is not None:
            self._pbar.set_postfix(loss=f"{float(logs['loss']):.4f}")
        evals = {k: v for k, v in logs.items() if k.startswith("eval_") and k.endswith("spearman")}
        if evals:
            text = ", ".join(f"{k[5:]} {float(v):.2f}" for k, v in evals.items())
            if self._pbar is not None:
                self._pbar.clear()
            logger.info("step %d: %s", state.global_step, text)
            if self._pbar is not None:
                self._pbar.refresh()

    def on_train_end(self, args, state, control, **kwargs):
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None


class EmbedkitTrainer(SentenceTransformerTrainer):
    """SentenceTransformerTrainer + loss callbacks, loss state in checkpoints, atomic checkpoints.

    Args:
        keep_checkpoints: complete checkpoints to keep, >= 1 (the best one is always kept); ``None``
            keeps all.
        split_global_batches: under multi-process training, build the batch sampler at the global
            batch size and give each rank one slice of every global batch (default); ``False``
            leaves accelerate's dealing of whole per-rank batches.
        (everything else as ``SentenceTransformerTrainer``; leave ``args.save_total_limit`` unset.)
    """

    def __init__(self, *args, keep_checkpoints: int | None = 2, log_to_stderr: bool = True,
                 split_global_batches: bool = True, **kwargs) -> None:
        if keep_checkpoints is not None:  # before anything is built: 0 or -1 would delete every checkpoint
            keep_checkpoints = check_positive_int(keep_checkpoints, "keep_checkpoints")
        self.split_global_batches = bool(split_global_batches)
        super().__init__(*args, **kwargs)
        self.keep_checkpoints = keep_checkpoints
        if log_to_stderr:  # transformers prints logs on stdout; keep stdout for results
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            self.remove_callback(PrinterCallback)
            self.remove_callback(ProgressCallback)
            self.add_callback(StderrProgressCallback(bar=not self.args.disable_tqdm))
        for loss in self._losses():
            for cb in getattr(loss, "callbacks", lambda: [])():
                self.add_callback(cb)

    def _losses(self) -> list:
        return list(self.loss.values()) if isinstance(self.loss, dict) else [self.loss]

    # --- multi-process batching -----------------------------------------------------------------
    def get_batch_sampler(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None,
                          generator=None, seed: int = 0):
        """The configured batch sampler; under multi-process training built at the global batch size
        and cut into one slice per rank (:class:`~embedkit.training.samplers.GlobalBatchSplitter`)."""
        w = int(self.args.world_size)
        if w <= 1 or not self.split_global_batches:
            return super().get_batch_sampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
        from embedkit.training.samplers import GlobalBatchSplitter

        inner = super().get_batch_sampler(dataset, batch_size * w, drop_last, valid_label_columns, generator, seed)
        return GlobalBatchSplitter(inner, w)

    # --- checkpoints ----------------------------------------------------------------------------
    def _save_rng_state(self, output_dir: str) -> None:
        """Every rank's RNG state, written by rank 0 (``rng_state_<rank>.pth``; ``rng_state.pth`` in one process)."""
        if int(self.args.world_size) <= 1:
            return super()._save_rng_state(output_dir)
        import random

        import numpy as np
        import torch
        import torch.distributed as dist

        state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.random.get_rng_state_all()
        states = [None] * int(self.args.world_size) if self.args.should_save else None
        dist.gather_object(state, states, dst=0)
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            for r, st in enumerate(states):
                torch.save(st, os.path.join(output_dir, f"rng_state_{r}.pth"))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        """As the trainer's, and across a change of process count: rank r takes ``rng_state_<r>.pth``,
        else rank 0's, else the single-process ``rng_state.pth``."""
        if checkpoint is None:
            return
        w, r = int(self.args.world_size), int(self.args.process_index)
        want = os.path.join(checkpoint, f"rng_state_{r}.pth" if w > 1 else "rng_state.pth")
        if not os.path.isfile(want):
            for alt in (f"rng_state_{r}.pth", "rng_state_0.pth", "rng_state.pth"):
                if os.path.isfile(os.path.join(checkpoint, alt)):
                    import tempfile

                    # hand the trainer's loader the file under the name it looks for
                    with tempfile.TemporaryDirectory() as tmp:
                        shutil.copy(os.path.join(checkpoint, alt), os.path.join(tmp, os.path.basename(want)))
                        return super()._load_rng_state(tmp)
        return super()._load_rng_state(checkpoint)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
        if self.args.should_save and os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, MARKER)):
            shutil.rmtree(folder, ignore_errors=True)  # a partial leftover of a killed run
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            for loss in self._losses():
                if hasattr(loss, "save_training_state"):
                    loss.save_training_state(folder)
            for p in Path(folder).rglob("*"):
                if p.is_file():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
            w = int(self.args.world_size)
            per = int(self.args.per_device_train_batch_size)
            atomic_write_json(os.path.join(folder, MARKER), {
                "global_step": self.state.global_step, "complete": True, "world_size": w,
                "per_device_batch_size": per,
                "global_batch_size": w * per * int(self.args.gradient_accumulation_steps)})
            self._rotate_complete(run_dir)
        if int(self.args.world_size) > 1:  # every rank leaves the step with the checkpoint complete
            import torch.distributed as dist

            dist.barrier()

    def _rotate_complete(self, run_dir: str) -> None:
        if self.keep_checkpoints is None:
            return
        done = complete_checkpoints(run_dir)
        best = self.state.best_model_checkpoint
        keep = set(done[-self.keep_checkpoints:])
        for p in done:
            if p not in keep and (best is None or Path(best).resolve() != p.resolve()):
                shutil.rmtree(p, ignore_errors=True)

    def _load_from_checkpoint(self, checkpoint_path: str, *args, **kwargs) -> None:
        if os.path.isfile(os.path.join(checkpoint_path, MARKER)):
            check_resume_compatible(checkpoint_path, int(self.args.world_size),
                                    int(self.args.per_device_train_batch_size),
                                    int(self.args.gradient_accumulation_steps))
        super()._load_from_checkpoint(checkpoint_path)
        for loss in self._losses():
            if hasattr(loss, "load_training_state"):
                loss.load_training_state(checkpoint_path)
