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

__all__ = ["MARKER", "EmbedkitTrainer", "StderrProgressCallback", "StsEvaluator", "complete_checkpoints",
           "latest_checkpoint"]

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
        (everything else as ``SentenceTransformerTrainer``; leave ``args.save_total_limit`` unset.)
    """

    def __init__(self, *args, keep_checkpoints: int | None = 2, log_to_stderr: bool = True, **kwargs) -> None:
        if keep_checkpoints is not None:  # before anything is built: 0 or -1 would delete every checkpoint
            keep_checkpoints = check_positive_int(keep_checkpoints, "keep_checkpoints")
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

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"checkpoint-{self.state.global_step}")
        if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, MARKER)):
            shutil.rmtree(folder, ignore_errors=True)  # a partial leftover of a killed run
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        for loss in self._losses():
            if hasattr(loss, "save_training_state"):
                loss.save_training_state(folder)
        for p in Path(folder).rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        atomic_write_json(os.path.join(folder, MARKER), {"global_step": self.state.global_step, "complete": True})
        self._rotate_complete(run_dir)

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
        super()._load_from_checkpoint(checkpoint_path)
        for loss in self._losses():
            if hasattr(loss, "load_training_state"):
                loss.load_training_state(checkpoint_path)
