"""Running a validated :class:`~embedkit.training.recipe.Recipe` on the sentence-transformers trainer.

:func:`train_recipe` checks everything cheap first (checkpoints of an earlier run, the output
folder, the training sentences), then loads the model, builds the loss and the batch sampler from
their registries (:mod:`embedkit.training.registry`), trains, and writes the output folder
atomically, marked as an embedkit ``model`` output. Progress messages go to this module's logger.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedkit.errors import RecipeError
from embedkit.training.recipe import Recipe

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "read_sentences", "train_recipe"]


def read_sentences(recipe: Recipe) -> list[str]:
    """The recipe's training sentences: stripped, at least ``data.min_chars`` long, at most ``data.max_sentences``.

    Raises:
        RecipeError: fewer usable sentences than one batch.
    """
    from embedkit.data import read_text_lines

    d = recipe.config["data"]
    texts = [t.strip() for t in read_text_lines(recipe.train_path)]
    texts = [t for t in texts if len(t) >= max(1, d["min_chars"])]
    if d["max_sentences"] is not None:
        texts = texts[: d["max_sentences"]]
    if len(texts) < recipe.config["training"]["batch_size"]:
        raise RecipeError(f"{recipe.source}: data.train: {len(texts)} usable sentences in {recipe.train_path}, "
                          f"fewer than one batch ({recipe.config['training']['batch_size']})")
    return texts


@dataclass
class TrainResult:
    """What :func:`train_recipe` returns (and writes to ``train_report.json``)."""

    output: Path
    global_step: int
    seconds: float
    steps_per_second: float
    best_checkpoint: str | None
    best_metric: float | None
    eval_history: list[dict]
    sampler_stats: dict | None
    resumed_from: str | None

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["output"] = str(self.output)
        return d


def _inputs(recipe: Recipe) -> list[Path]:
    """Files and folders the run reads: the output folder must not be, contain or lie inside them."""
    paths = [recipe.train_path, *recipe.eval_paths]
    model = recipe.config["model"]
    if model not in (None, "default") and Path(model).expanduser().exists():
        paths.append(Path(model).expanduser())
    return paths


def train_recipe(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, show_progress: bool = True,
                 callbacks: list | None = None, progress: bool | None = None,
                 log: Callable[[str], None] | None = None) -> TrainResult:
    """Run a recipe on the sentence-transformers trainer; returns a :class:`TrainResult`.

    Args:
        recipe: a validated recipe (:func:`~embedkit.training.recipe.load_recipe`).
        resume: continue from the newest complete checkpoint in ``recipe.checkpoint_dir`` (weights,
            optimizer, scheduler, RNG, data position and loss state); with the same recipe the final
            weights equal those of an uninterrupted run. Without it, existing checkpoints are an
            error (a run is never silently mixed with an older one). A resumed run may replace its
            own earlier output (an embedkit model folder).
        overwrite: replace an existing embedkit model folder at ``recipe.output``. A folder that is
            not an embedkit model output (or one of the run's inputs) is never replaced.
        show_progress: a progress bar on stderr.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        progress: deprecated spelling of ``show_progress``.
        log: deprecated; messages go to the ``embedkit.training.run`` logger.

    Raises:
        RecipeError: checkpoints of an earlier run without ``resume``, too few sentences.
        OutputExistsError: the output folder may not be replaced (checked before any model loads).
    """
    if progress is not None:
        warnings.warn("train_recipe(progress=...) is deprecated; use show_progress=", DeprecationWarning, stacklevel=2)
        show_progress = bool(progress)
    if log is not None:
        warnings.warn("train_recipe(log=...) is deprecated; messages go to the 'embedkit.training' logger",
                      DeprecationWarning, stacklevel=2)

    def say(msg: str, *args) -> None:
        logger.info(msg, *args)
        if log is not None:
            log(msg % args if args else msg)

    from embedkit._io import prepare_output
    from embedkit.training.trainer import complete_checkpoints, latest_checkpoint

    c = recipe.config
    t = c["training"]
    ckpt_dir = recipe.checkpoint_dir
    resume_from = None
    if resume:
        last = latest_checkpoint(ckpt_dir)
        if last is None:
            say("no complete checkpoint in %s; starting from the beginning", ckpt_dir)
        else:
            resume_from = str(last)
            say("resuming from %s", last)
    elif complete_checkpoints(ckpt_dir):
        raise RecipeError(f"{recipe.source}: checkpoint_dir: {ckpt_dir} already holds checkpoints of an earlier run; "
                          "pass --resume to continue it, or delete the folder")
    inputs = _inputs(recipe)
    prepare_output(recipe.output, "model", overwrite=overwrite or resume, inputs=inputs, option=recipe.output_option)
    texts = read_sentences(recipe)
    say("%d training sentences from %s", len(texts), recipe.train_path)

    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from transformers.utils import logging as hf_logging

    from embedkit._io import atomic_directory, atomic_write_json, mark_output
    from embedkit.models.loading import load_encoder
    from embedkit.training.registry import LOSSES, build_loss, build_sampler
    from embedkit.training.trainer import EmbedkitTrainer, StsEvaluator

    hf_logging.set_verbosity_error()
    torch.manual_seed(t["seed"])
    model = load_encoder(c["model"])
    model.max_seq_length = t["max_seq_length"]
    loss_name = c["loss"]["name"]
    loss = build_loss(loss_name, model, c["loss"])
    dataset = Dataset.from_dict({col: texts for col in LOSSES[loss_name].columns})
    plan = build_sampler(c["sampler"]["name"], texts, model, c, show_progress=show_progress)

    evaluator = StsEvaluator(recipe.eval_paths, name="sts-dev") if recipe.eval_paths else None
    eval_every = c["eval"]["every"] or t["checkpoint_every"]
    select_best = bool(c["eval"]["select_best"] and evaluator is not None)
    use_cpu = t["use_cpu"] if t["use_cpu"] is not None else not torch.cuda.is_available()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir),
        use_cpu=use_cpu,
        seed=t["seed"],
        data_seed=t["seed"],
        per_device_train_batch_size=t["batch_size"],
        learning_rate=t["learning_rate"],
        num_train_epochs=t["epochs"],
        max_steps=t["max_steps"] if t["max_steps"] else -1,
        warmup_steps=float(t["warmup_ratio"]),  # a float < 1 is a ratio in transformers v5
        weight_decay=t["weight_decay"],
        fp16=t["fp16"],
        bf16=t["bf16"],
        eval_strategy="steps" if evaluator is not None else "no",
        eval_steps=eval_every,
        save_strategy="steps",
        save_steps=t["checkpoint_every"],
        save_total_limit=None,
        load_best_model_at_end=select_best,
        metric_for_best_model="eval_sts-dev_spearman" if select_best else None,
        greater_is_better=True,
        logging_steps=t["logging_steps"],
        report_to="none",
        disable_tqdm=not show_progress,
        dataloader_drop_last=True,
        batch_sampler=plan.batch_sampler,
    )
    trainer = EmbedkitTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator,
                              keep_checkpoints=t["keep_checkpoints"], callbacks=callbacks)
    start = time.perf_counter()
    step0 = 0
    if resume_from:
        with open(os.path.join(resume_from, "trainer_state.json")) as f:
            step0 = int(json.load(f).get("global_step", 0))
    out = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    steps_done = max(out.global_step - step0, 0)
    history = [dict(h) for h in trainer.state.log_history if "eval_sts-dev_spearman" in h]
    result = TrainResult(output=recipe.output, global_step=out.global_step, seconds=seconds,
                         steps_per_second=steps_done / seconds if seconds > 0 else float("nan"),
                         best_checkpoint=trainer.state.best_model_checkpoint, best_metric=trainer.state.best_metric,
                         eval_history=history, sampler_stats=plan.stats(), resumed_from=resume_from)
    # the folder may have changed during a long run: check again before replacing anything
    try:
        prepare_output(recipe.output, "model", overwrite=True, inputs=inputs, option=recipe.output_option)
    except Exception as e:
        raise type(e)(f"{e} (the trained weights are in the last checkpoint in {ckpt_dir})") from None
    with atomic_directory(recipe.output) as tmp:
        model.save(str(tmp))
        report = result.as_dict()
        report["recipe"] = c
        atomic_write_json(tmp / "train_report.json", report)
        mark_output(tmp, "model")
    best = (f", best STS-B dev {trainer.state.best_metric:.2f} at {trainer.state.best_model_checkpoint}"
            if select_best and trainer.state.best_metric is not None else "")
    say("saved %s (step %d%s)", recipe.output, out.global_step, best)
    return result
