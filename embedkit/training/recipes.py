"""Training recipes: a YAML file -> a validated :class:`Recipe` -> a sentence-transformers training run.

A recipe names the model, the unlabelled training sentences, the loss, the batch sampler, the
hyperparameters, the evaluation sets and the output folder. Everything is validated before any
model is loaded, and every problem names its key (``loss.name: unknown loss 'simcsee' ...``).

Example (``configs/esimcse.yaml``)::

    model: default                      # all-MiniLM-L6-v2, or a sentence-transformers folder
    data:
      train: data:unlabeled/wiki1m_head.txt.gz   # "data:" = the shared data folder
    loss: {name: esimcse, temperature: 0.05, dup_rate: 0.32, momentum: 0.995, queue_factor: 2.5}
    sampler: {name: random}             # random | no_duplicates | gsimclr
    training: {seed: 42, batch_size: 64, max_seq_length: 32, learning_rate: 3.0e-5, max_steps: 250,
               checkpoint_every: 125}
    eval: {sets: [data:sts/stsb.dev.tsv], select_best: true}
    output: runs/esimcse

Output layout: ``output`` is a sentence-transformers folder (replaced atomically at the end) with
``train_report.json``; checkpoints live in ``checkpoint_dir`` (default ``<output>.checkpoints``).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from embedkit.errors import EmbedkitError


class RecipeError(EmbedkitError):
    """A recipe is invalid; the message names the file and the key."""


LOSSES = ("simcse", "esimcse", "mnrl")
SAMPLERS = ("random", "no_duplicates", "gsimclr")

# key -> (type(s), default). A nested dict is a section. Required keys use the REQUIRED marker.
REQUIRED = object()
SCHEMA: dict[str, Any] = {
    "model": ((str, type(None)), None),
    "output": (str, REQUIRED),
    "checkpoint_dir": ((str, type(None)), None),
    "data": {
        "train": (str, REQUIRED),
        "max_sentences": ((int, type(None)), None),
        "min_chars": (int, 1),
    },
    "loss": {
        "name": (str, REQUIRED),
        "temperature": (float, 0.05),
        "dup_rate": (float, 0.32),
        "max_dup": (int, 10),
        "momentum": (float, 0.995),
        "queue_size": ((int, type(None)), None),
        "queue_factor": (float, 2.5),
    },
    "sampler": {
        "name": (str, "random"),
        "embed": (str, "encoder"),
        "shuffle_batches": (bool, True),
    },
    "training": {
        "seed": (int, 42),
        "batch_size": (int, 64),
        "max_seq_length": (int, 32),
        "learning_rate": (float, 3e-5),
        "epochs": (float, 1.0),
        "max_steps": ((int, type(None)), None),
        "warmup_ratio": (float, 0.0),
        "weight_decay": (float, 0.0),
        "checkpoint_every": (int, 125),
        "keep_checkpoints": (int, 2),
        "logging_steps": (int, 25),
        "fp16": (bool, False),
        "bf16": (bool, False),
        "use_cpu": ((bool, type(None)), None),
    },
    "eval": {
        "sets": (list, None),
        "every": ((int, type(None)), None),
        "select_best": (bool, True),
    },
}

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
               type(None): "null", dict: "a mapping"}


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _coerce(value, types, where: str, src: str):
    types = types if isinstance(types, tuple) else (types,)
    if value is None:
        if type(None) in types:
            return None
        raise RecipeError(f"{src}: {where}: must be {_type_name(types)}, got null")
    if isinstance(value, bool):
        if bool in types:
            return value
        raise RecipeError(f"{src}: {where}: must be {_type_name(types)}, got {value!r}")
    if float in types and isinstance(value, (int, float)):
        return float(value)
    if float in types and isinstance(value, str):  # YAML 1.1 reads 3e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if int in types and isinstance(value, int):
        return value
    if int in types and isinstance(value, float) and value.is_integer() and float not in types:
        return int(value)
    for t in types:
        if t not in (int, float, bool, type(None)) and isinstance(value, t):
            return value
    raise RecipeError(f"{src}: {where}: must be {_type_name(types)}, got {type(value).__name__} {value!r}")


def _validate_section(raw: dict, schema: dict, prefix: str, src: str) -> dict:
    if not isinstance(raw, dict):
        raise RecipeError(f"{src}: {prefix.rstrip('.') or 'recipe'}: must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise RecipeError(f"{src}: {prefix}{unknown[0]}: unknown key; allowed here: {', '.join(sorted(schema))}")
    out = {}
    for key, spec in schema.items():
        where = prefix + key
        if isinstance(spec, dict):
            out[key] = _validate_section(raw.get(key) or {}, spec, where + ".", src)
            continue
        types, default = spec
        if key not in raw:
            if default is REQUIRED:
                raise RecipeError(f"{src}: {where}: required key is missing")
            out[key] = copy.deepcopy(default)
        else:
            out[key] = _coerce(raw[key], types, where, src)
    return out


def resolve_path(value: str, base: Path | None = None) -> Path:
    """``data:rel/path`` -> the shared data folder; ``~`` expanded; relative paths from the cwd."""
    from embedkit._io import data_dir

    if value.startswith("data:"):
        return data_dir() / value[len("data:"):]
    return Path(value).expanduser()


@dataclass
class Recipe:
    """A validated recipe (see the module docstring for the keys)."""

    config: dict
    source: str = "<dict>"
    train_path: Path = field(init=False)
    eval_paths: list[Path] = field(init=False)
    output: Path = field(init=False)
    checkpoint_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        c, src = self.config, self.source
        if c["loss"]["name"] not in LOSSES:
            raise RecipeError(f"{src}: loss.name: unknown loss {c['loss']['name']!r}; choose one of {', '.join(LOSSES)}")
        if c["sampler"]["name"] not in SAMPLERS:
            raise RecipeError(
                f"{src}: sampler.name: unknown sampler {c['sampler']['name']!r}; choose one of {', '.join(SAMPLERS)}")
        if c["sampler"]["embed"] not in ("encoder", "tfidf"):
            raise RecipeError(f"{src}: sampler.embed: must be 'encoder' or 'tfidf', got {c['sampler']['embed']!r}")
        t = c["training"]
        for key in ("batch_size", "max_seq_length", "checkpoint_every", "logging_steps"):
            if t[key] < 1:
                raise RecipeError(f"{src}: training.{key}: must be >= 1, got {t[key]}")
        if t["max_steps"] is not None and t["max_steps"] < 1:
            raise RecipeError(f"{src}: training.max_steps: must be >= 1, got {t['max_steps']}")
        if t["learning_rate"] <= 0:
            raise RecipeError(f"{src}: training.learning_rate: must be > 0, got {t['learning_rate']}")
        if c["loss"]["name"] == "esimcse" and not 0 <= c["loss"]["momentum"] < 1:
            raise RecipeError(f"{src}: loss.momentum: must be in [0, 1), got {c['loss']['momentum']}")
        if c["loss"]["temperature"] <= 0:
            raise RecipeError(f"{src}: loss.temperature: must be > 0, got {c['loss']['temperature']}")
        self.train_path = resolve_path(c["data"]["train"])
        if not self.train_path.is_file():
            raise RecipeError(f"{src}: data.train: file not found: {self.train_path}")
        sets = c["eval"]["sets"]
        if sets is None:
            sets = ["data:sts/stsb.dev.tsv"]
        self.eval_paths = []
        for i, s in enumerate(sets):
            if not isinstance(s, str):
                raise RecipeError(f"{src}: eval.sets[{i}]: must be a path string, got {s!r}")
            p = resolve_path(s)
            if not p.is_file():
                raise RecipeError(f"{src}: eval.sets[{i}]: file not found: {p}")
            self.eval_paths.append(p)
        model = c["model"]
        if model not in (None, "default"):
            from embedkit.models.loading import resolve_model

            try:
                resolve_model(model)
            except EmbedkitError as e:
                raise RecipeError(f"{src}: model: {e}") from e
        self.output = Path(c["output"]).expanduser()
        self.checkpoint_dir = Path(c["checkpoint_dir"]).expanduser() if c["checkpoint_dir"] else \
            self.output.parent / (self.output.name + ".checkpoints")

    def with_overrides(self, *, max_steps: int | None = None, output: str | None = None) -> "Recipe":
        c = copy.deepcopy(self.config)
        if max_steps is not None:
            c["training"]["max_steps"] = int(max_steps)
        if output is not None:
            c["output"] = str(output)
            c["checkpoint_dir"] = None if self.config["checkpoint_dir"] is None else c["checkpoint_dir"]
        return Recipe(c, self.source)


def validate_recipe(raw: Any, source: str = "<dict>") -> Recipe:
    """Validate a parsed recipe (a dict); raises :class:`RecipeError` naming the key."""
    return Recipe(_validate_section(raw if raw is not None else {}, SCHEMA, "", source), source)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a YAML recipe."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{p.name}: not valid YAML: {str(e).splitlines()[0]}") from e
    return validate_recipe(raw, p.name)


def read_sentences(recipe: Recipe) -> list[str]:
    from embedkit.data import read_text_lines

    d = recipe.config["data"]
    texts = [t.strip() for t in read_text_lines(recipe.train_path)]
    texts = [t for t in texts if len(t) >= max(1, d["min_chars"])]
    if d["max_sentences"]:
        texts = texts[: d["max_sentences"]]
    if len(texts) < recipe.config["training"]["batch_size"]:
        raise RecipeError(f"{recipe.source}: data.train: {len(texts)} usable sentences in {recipe.train_path}, "
                          f"fewer than one batch ({recipe.config['training']['batch_size']})")
    return texts


def build_loss(name: str, model, cfg: dict):
    if name == "simcse":
        from embedkit.training.losses import SimCSELoss

        return SimCSELoss(model, temperature=cfg["temperature"])
    if name == "esimcse":
        from embedkit.training.losses import ESimCSELoss

        return ESimCSELoss(model, temperature=cfg["temperature"], dup_rate=cfg["dup_rate"], max_dup=cfg["max_dup"],
                           momentum=cfg["momentum"], queue_size=cfg["queue_size"], queue_factor=cfg["queue_factor"])
    if name == "mnrl":
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model, scale=1.0 / cfg["temperature"])
    raise RecipeError(f"loss.name: unknown loss {name!r}")  # pragma: no cover - validated earlier


@dataclass
class TrainResult:
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


def train_recipe(recipe: Recipe, *, resume: bool = False, progress: bool = True,
                 log: Callable[[str], None] | None = None, callbacks: list | None = None) -> TrainResult:
    """Run a recipe on the sentence-transformers trainer; returns a :class:`TrainResult`.

    ``resume=True`` continues from the newest complete checkpoint in ``recipe.checkpoint_dir``
    (weights, optimizer, scheduler, RNG, data position and loss state); with the same recipe the
    final weights equal those of an uninterrupted run. Without ``resume``, existing checkpoints are
    an error (so a run is never silently mixed with an older one). ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from transformers.utils import logging as hf_logging

    from embedkit._io import atomic_directory, atomic_write_json
    from embedkit.models.loading import load_encoder
    from embedkit.training.trainer import EmbedkitTrainer, StsEvaluator, complete_checkpoints, latest_checkpoint

    log = log or (lambda msg: None)
    hf_logging.set_verbosity_error()
    c = recipe.config
    t = c["training"]
    ckpt_dir = recipe.checkpoint_dir
    resume_from = None
    if resume:
        last = latest_checkpoint(ckpt_dir)
        if last is None:
            log(f"no complete checkpoint in {ckpt_dir}; starting from the beginning")
        else:
            resume_from = str(last)
            log(f"resuming from {last}")
    elif complete_checkpoints(ckpt_dir):
        raise RecipeError(f"{recipe.source}: checkpoint_dir: {ckpt_dir} already holds checkpoints of an earlier run; "
                          "pass --resume to continue it, or delete the folder")

    texts = read_sentences(recipe)
    log(f"{len(texts)} training sentences from {recipe.train_path}")
    torch.manual_seed(t["seed"])
    model = load_encoder(c["model"])
    model.max_seq_length = t["max_seq_length"]
    loss_name = c["loss"]["name"]
    loss = build_loss(loss_name, model, c["loss"])
    dataset = Dataset.from_dict({"anchor": texts, "positive": texts} if loss_name == "mnrl" else {"text": texts})

    sampler_name = c["sampler"]["name"]
    batch_sampler: Any = "batch_sampler"
    sampler_factory = None
    if sampler_name == "no_duplicates":
        batch_sampler = "no_duplicates"
    elif sampler_name == "gsimclr":
        from embedkit.training.samplers import gsimclr_batch_sampler, pseudo_labels

        log(f"G-SimCLR: k-means (K={t['batch_size']}) on {c['sampler']['embed']} embeddings")
        labels = pseudo_labels(texts, t["batch_size"], method=c["sampler"]["embed"], model=model, seed=t["seed"],
                               show_progress=progress)
        sampler_factory = gsimclr_batch_sampler(labels, shuffle_batches=c["sampler"]["shuffle_batches"])
        batch_sampler = sampler_factory

    evaluator = StsEvaluator(recipe.eval_paths, name="sts-dev") if recipe.eval_paths else None
    eval_every = c["eval"]["every"] or t["checkpoint_every"]
    select_best = bool(c["eval"]["select_best"] and evaluator is not None)
    if select_best and t["checkpoint_every"] % eval_every:
        raise RecipeError(f"{recipe.source}: training.checkpoint_every ({t['checkpoint_every']}) must be a multiple "
                          f"of eval.every ({eval_every}) for best-checkpoint selection")
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
        disable_tqdm=not progress,
        dataloader_drop_last=True,
        batch_sampler=batch_sampler,
    )
    trainer = EmbedkitTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator,
                              keep_checkpoints=t["keep_checkpoints"], callbacks=callbacks)
    start = time.perf_counter()
    step0 = 0
    if resume_from:
        import json

        with open(os.path.join(resume_from, "trainer_state.json")) as f:
            step0 = int(json.load(f).get("global_step", 0))
    out = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    steps_done = max(out.global_step - step0, 0)
    history = [{k: v for k, v in h.items()} for h in trainer.state.log_history if "eval_sts-dev_spearman" in h]
    stats = dict(sampler_factory.sampler.stats) if sampler_factory and sampler_factory.sampler else None
    result = TrainResult(output=recipe.output, global_step=out.global_step, seconds=seconds,
                         steps_per_second=steps_done / seconds if seconds > 0 else float("nan"),
                         best_checkpoint=trainer.state.best_model_checkpoint, best_metric=trainer.state.best_metric,
                         eval_history=history, sampler_stats=stats, resumed_from=resume_from)
    with atomic_directory(recipe.output) as tmp:
        model.save(str(tmp))
        report = result.as_dict()
        report["recipe"] = c
        atomic_write_json(tmp / "train_report.json", report)
    log(f"saved {recipe.output} (step {out.global_step}"
        + (f", best STS-B dev {trainer.state.best_metric:.2f} at {trainer.state.best_model_checkpoint}" if select_best
           and trainer.state.best_metric is not None else "") + ")")
    return result
