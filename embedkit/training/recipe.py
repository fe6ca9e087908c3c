"""Training recipes: a YAML file -> a validated :class:`Recipe` (schema, loading, validation).

A recipe names the model, the unlabelled training sentences, the loss, the batch sampler, the
hyperparameters, the evaluation sets and the output folder. Everything is validated before any
model is loaded, and every problem names the file and its key
(``r.yaml: loss.name: unknown loss 'simcsee'; choose one of ...``). Running a recipe is
:func:`embedkit.training.run.train_recipe`.

Example (``configs/esimcse.yaml``):

.. code-block:: yaml

    model: default                      # all-MiniLM-L6-v2, or a sentence-transformers folder
    data:
      train: data:unlabeled/wiki1m_head.txt.gz   # "data:" = the shared data folder
    loss: {name: esimcse, temperature: 0.05, dup_rate: 0.32, momentum: 0.995, queue_factor: 2.5}
    sampler: {name: random}             # random | no_duplicates | gsimclr
    training: {seed: 42, batch_size: 64, max_seq_length: 32, learning_rate: 3.0e-5, max_steps: 250,
               checkpoint_every: 125}
    eval: {sets: [data:sts/stsb.dev.tsv], select_best: true}
    output: runs/esimcse

Output layout: ``output`` is a sentence-transformers folder (replaced atomically at the end, marked
as an embedkit ``model`` output) with ``train_report.json``; checkpoints live in ``checkpoint_dir``
(default ``<output>.checkpoints``).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedkit.errors import EmbedkitError, RecipeError
from embedkit.training.registry import LOSSES, SAMPLERS

__all__ = ["SCHEMA", "Recipe", "RecipeError", "validate_recipe", "load_recipe", "resolve_path"]

_NONE = type(None)

#: data.format values: one sentence per line; TSV anchor/positive[/negatives]; STS-style scored pairs;
#: a BEIR folder's (query, relevant document) pairs from qrels/<split>.tsv
DATA_FORMATS = ("sentences", "pairs", "scored_pairs", "beir")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Key:
    """One recipe key: accepted type(s), default, and the allowed range of a number.

    ``low``/``high`` bound numbers (``low_open``/``high_open`` exclude the bound); NaN and infinity
    are always refused for numbers; ``choices`` restricts a string.
    """

    types: Any
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    hint: str = ""


# key -> Key. A nested dict is a section.
SCHEMA: dict[str, Any] = {
    "model": Key((str, _NONE), None),
    "output": Key(str, REQUIRED),
    "checkpoint_dir": Key((str, _NONE), None),
    "data": {
        "train": Key(str, REQUIRED),
        "format": Key(str, "sentences", choices=DATA_FORMATS),
        "split": Key(str, "train"),
        "extra": Key((list, _NONE), None, hint="a list of {train, format, loss} datasets trained alongside"),
        "max_sentences": Key((int, _NONE), None, low=1, hint="or null for all"),
        "min_chars": Key(int, 1, low=0),
    },
    "loss": {
        "name": Key(str, REQUIRED),
        "temperature": Key(float, 0.05, low=1e-4, hint="similarities are divided by it; 0.05 in SimCSE"),
        "dup_rate": Key(float, 0.32, low=0, high=1),
        "max_dup": Key(int, 10, low=0),
        "momentum": Key(float, 0.995, low=0, high=1, high_open=True),
        "queue_size": Key((int, _NONE), None, low=0, hint="or null for queue_factor x batch size"),
        "queue_factor": Key(float, 2.5, low=0),
        "in_batch_negatives": Key(bool, True),
        "gather_across_devices": Key(bool, True),
        "matryoshka": Key((dict, _NONE), None),
        "matryoshka2d": Key((dict, _NONE), None),
        "starbucks": Key((dict, _NONE), None),
    },
    "pooling": {
        "name": Key(str, "keep", choices=("keep", "mean", "latent_attention")),
        "num_latents": Key(int, 512, low=1),
        "num_heads": Key(int, 8, low=1),
        "mlp_ratio": Key(int, 4, low=1),
    },
    "stages": Key((list, _NONE), None, hint="a list of stages, each overriding data / loss / training"),
    "sampler": {
        "name": Key(str, "random"),
        "embed": Key(str, "encoder", choices=("encoder", "tfidf")),
        "shuffle_batches": Key(bool, True),
    },
    "training": {
        "seed": Key(int, 42, low=0, high=2**32 - 1),
        "batch_size": Key(int, 64, low=1),
        "max_seq_length": Key(int, 32, low=1, high=2**31 - 1, hint="the model's positions bound it too"),
        "learning_rate": Key(float, 3e-5, low=0, high=1, low_open=True, hint="AdamW; 3e-5 is typical"),
        "epochs": Key(float, 1.0, low=0, low_open=True),
        "max_steps": Key((int, _NONE), None, low=1, hint="or null to train for `epochs`"),
        "warmup_ratio": Key(float, 0.0, low=0, high=1, high_open=True),
        "weight_decay": Key(float, 0.0, low=0),
        "checkpoint_every": Key(int, 125, low=1),
        "keep_checkpoints": Key((int, _NONE), 2, low=1, hint="or null to keep every checkpoint"),
        "logging_steps": Key(int, 25, low=1),
        "fp16": Key(bool, False),
        "bf16": Key(bool, False),
        "use_cpu": Key((bool, _NONE), None),
        "ddp_timeout": Key(int, 600, low=1, high=365 * 86400, hint="seconds a collective waits for the other processes"),
        "prompts": Key((dict, str, _NONE), None,
                       hint="instruction prepended to a column, e.g. {anchor: 'Instruct: ...\\nQuery: '}"),
    },
    "eval": {
        "sets": Key((list, _NONE), None),
        "every": Key((int, _NONE), None, low=1, hint="or null for training.checkpoint_every"),
        "select_best": Key(bool, True),
    },
}

# the loss wrappers (one at most): their keys, validated like sections when present
WRAPPERS: dict[str, dict[str, Key]] = {
    "matryoshka": {  # sentence-transformers' MatryoshkaLoss
        "dims": Key(list, REQUIRED),
        "weights": Key((list, _NONE), None),
    },
    "matryoshka2d": {  # sentence-transformers' Matryoshka2dLoss (2DMSE)
        "dims": Key(list, REQUIRED),
        "weights": Key((list, _NONE), None),
        "n_layers_per_step": Key(int, 1),
        "n_dims_per_step": Key(int, 1),
        "last_layer_weight": Key(float, 1.0, low=0),
        "prior_layers_weight": Key(float, 1.0, low=0),
        "kl_div_weight": Key(float, 1.0, low=0),
        "kl_temperature": Key(float, 0.3, low=0, low_open=True),
    },
    "starbucks": {  # embedkit StarbucksLoss
        "ladder": Key((list, _NONE), None, hint="[[layers, dims], ...] or null for the default ladder"),
        "last_layer_weight": Key(float, 1.0, low=0),
        "kl_div_weight": Key(float, 1.0, low=0),
        "kl_temperature": Key(float, 0.3, low=0, low_open=True),
    },
}

#: keys a stage may override (each a section of the recipe)
STAGE_KEYS = ("name", "data", "loss", "sampler", "training", "eval", "pooling")

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
               _NONE: "null", dict: "a mapping"}


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _coerce(value, types, where: str, src: str):
    types = types if isinstance(types, tuple) else (types,)
    if value is None:
        if _NONE in types:
            return None
        raise RecipeError(f"{src}: {where}: must be {_type_name(types)}, got null")
    if isinstance(value, bool):
        if bool in types:
            return value
        raise RecipeError(f"{src}: {where}: must be {_type_name(types)}, got {value!r}")
    if str in types and isinstance(value, os.PathLike):  # recipes built in Python may hold Path objects
        return os.fspath(value)
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
        if t not in (int, float, bool, _NONE) and isinstance(value, t):
            return value
    raise RecipeError(f"{src}: {where}: must be {_type_name(types)}, got {type(value).__name__} {value!r}")


def _num(x) -> str:
    """A bound or value for a message: whole numbers exactly, others as ``%g``."""
    return str(x) if x is None or isinstance(x, int) and not isinstance(x, bool) else f"{x:g}"


def _check_range(value, key: Key, where: str, src: str) -> None:
    if isinstance(value, str) and key.choices is not None and value not in key.choices:
        raise RecipeError(f"{src}: {where}: must be one of {', '.join(map(repr, key.choices))}, got {value!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    hint = f" ({key.hint})" if key.hint else ""
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{src}: {where}: must be a finite number, got {value}{hint}")
    interval = f"in {'(' if key.low_open else '['}{_num(key.low)}, {_num(key.high)}{')' if key.high_open else ']'}"
    if key.low is not None and (value < key.low or (key.low_open and value == key.low)):
        bound = f"> {_num(key.low)}" if key.low_open else f">= {_num(key.low)}"
        if key.high is not None:
            bound = interval
        raise RecipeError(f"{src}: {where}: must be {bound}, got {_num(value)}{hint}")
    if key.high is not None and (value > key.high or (key.high_open and value == key.high)):
        bound = interval if key.low is not None else (f"< {_num(key.high)}" if key.high_open else f"<= {_num(key.high)}")
        raise RecipeError(f"{src}: {where}: must be {bound}, got {_num(value)}{hint}")


def _validate_section(raw: dict, schema: dict, prefix: str, src: str) -> dict:
    if not isinstance(raw, dict):
        raise RecipeError(f"{src}: {prefix.rstrip('.') or 'recipe'}: must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema), key=str)
    if unknown:
        raise RecipeError(f"{src}: {prefix}{unknown[0]}: unknown key; allowed here: {', '.join(sorted(schema))}")
    out = {}
    for name, spec in schema.items():
        where = prefix + name
        if isinstance(spec, dict):
            out[name] = _validate_section(raw.get(name) or {}, spec, where + ".", src)
            continue
        if name not in raw:
            if spec.default is REQUIRED:
                raise RecipeError(f"{src}: {where}: required key is missing")
            out[name] = copy.deepcopy(spec.default)
        else:
            out[name] = _coerce(raw[name], spec.types, where, src)
            _check_range(out[name], spec, where, src)
    return out


def resolve_path(value: str, base: Path | None = None) -> Path:
    """``data:rel/path`` -> the shared data folder; ``~`` expanded; relative paths from the cwd."""
    from embedkit._io import data_dir

    if value.startswith("data:"):
        return data_dir() / value[len("data:"):]
    return Path(value).expanduser()


@dataclass
class Recipe:
    """A validated recipe (see the module docstring for the keys).

    Attributes:
        config: the validated recipe with every default filled in.
        source: the file name used in error messages.
        output_option: how errors about the output folder name it (``"r.yaml: output"``, or
            ``"--out"`` after :meth:`with_overrides` set it).
    """

    config: dict
    source: str = "<dict>"
    output_option: str = ""
    _stage_model_pending: bool = False
    train_path: Path = field(init=False)
    eval_paths: list[Path] = field(init=False)
    output: Path = field(init=False)
    checkpoint_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        c, src = self.config, self.source
        if not self.output_option:
            self.output_option = f"{src}: output"
        if c["loss"]["name"] not in LOSSES:
            raise RecipeError(f"{src}: loss.name: unknown loss {c['loss']['name']!r}; choose one of {', '.join(LOSSES)}")
        if c["sampler"]["name"] not in SAMPLERS:
            raise RecipeError(
                f"{src}: sampler.name: unknown sampler {c['sampler']['name']!r}; choose one of {', '.join(SAMPLERS)}")
        self._check_loss_and_data(c, src)
        prompts = c["training"]["prompts"]
        if isinstance(prompts, dict) and not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise RecipeError(f"{src}: training.prompts: must map column names to instruction strings, got {prompts!r}")
        t = c["training"]
        if t["fp16"] and t["bf16"]:
            raise RecipeError(f"{src}: training.bf16: fp16 and bf16 are both true; choose one")
        if t["weight_decay"] * t["learning_rate"] >= 1:
            raise RecipeError(f"{src}: training.weight_decay: {t['weight_decay']:g} x learning_rate "
                              f"{t['learning_rate']:g} must be < 1 (AdamW shrinks every weight by that product "
                              "each step); 0.01 is typical")
        self.train_path = resolve_path(c["data"]["train"])
        if c["data"]["format"] == "beir":
            if not self.train_path.is_dir():
                raise RecipeError(f"{src}: data.train: a BEIR folder is expected for format beir: {self.train_path}")
        elif not self.train_path.is_file():
            raise RecipeError(f"{src}: data.train: file not found: {self.train_path}")
        self.extra = self._check_extra(c, src)
        if not self._stage_model_pending:
            self.check_against_model(c["model"])
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
            _check_eval_set(p, src, f"eval.sets[{i}]")
            self.eval_paths.append(p)
        eval_every = c["eval"]["every"] or t["checkpoint_every"]
        if c["eval"]["select_best"] and self.eval_paths and t["checkpoint_every"] % eval_every:
            raise RecipeError(f"{src}: training.checkpoint_every: {t['checkpoint_every']} must be a multiple "
                              f"of eval.every ({eval_every}) for best-checkpoint selection")
        model = c["model"]
        if model not in (None, "default") and not self._stage_model_pending:
            from embedkit.models.loading import resolve_model

            try:
                resolve_model(model)
            except EmbedkitError as e:
                raise RecipeError(f"{src}: model: {e}") from e
        if not c["output"].strip():
            raise RecipeError(f"{src}: output: is empty; name a new folder, e.g. runs/my_model")
        self.output = Path(c["output"]).expanduser()
        self.checkpoint_dir = Path(c["checkpoint_dir"]).expanduser() if c["checkpoint_dir"] else \
            self.output.parent / (self.output.name + ".checkpoints")

    def check_against_model(self, model, where: str = "") -> None:
        """Check what depends on the model's size, read from its config files (no weights loaded).

        ``pooling``: ``num_heads`` must divide the width, and training the latent-attention module
        must fit in this machine's memory; ``training.max_seq_length`` must be within the model's
        positions. Skipped for what the config does not say (a hub name, an unusual layout); the
        pooling is checked again against the training device once the model has loaded
        (:func:`embedkit.training.run.apply_pooling`).
        """
        c, src = self.config, self.source
        width, limit = model_width_and_positions(model)
        pool = c["pooling"]
        if pool["name"] == "latent_attention" and _whole(width):
            if width % pool["num_heads"]:
                raise RecipeError(f"{src}: {where}pooling.num_heads: {pool['num_heads']} does not divide the model's "
                                  f"width {width}")
            check_pooling_memory(pool, width, c["training"]["batch_size"], c["training"]["max_seq_length"],
                                 f"{src}: {where}")
        if _whole(width):
            for loss, key in [(c["loss"], "loss"), *((x["loss"], f"data.extra[{i}].loss")
                                                     for i, x in enumerate(getattr(self, "extra", [])))]:
                _check_queue_memory(loss, width, c["training"]["batch_size"], f"{src}: {where}{key}")
        n = c["training"]["max_seq_length"]
        if limit is not None and n > limit:
            raise RecipeError(f"{src}: {where}training.max_seq_length: {n} is beyond the model's {limit} positions "
                              f"(max_position_embeddings in its config.json); use at most {limit}")

    @staticmethod
    def _check_loss_and_data(c: dict, src: str, where: str = "") -> None:
        from embedkit.training.registry import LOSSES

        loss, fmt = c["loss"], c["data"]["format"]
        entry = LOSSES[loss["name"]]
        if fmt not in entry.formats:
            raise RecipeError(f"{src}: {where}loss.name: {loss['name']} trains on data.format "
                              f"{' or '.join(entry.formats)}, not {fmt}")
        if not loss["in_batch_negatives"] and loss["name"] != "mnrl":
            raise RecipeError(f"{src}: {where}loss.in_batch_negatives: only mnrl can turn in-batch negatives off")
        wrappers = [w for w in WRAPPERS if loss[w] is not None]
        if len(wrappers) > 1:
            raise RecipeError(f"{src}: {where}loss.{wrappers[1]}: only one of matryoshka, matryoshka2d, starbucks at a time")
        if "starbucks" in wrappers and entry.from_embeddings is False:
            able = [n for n, e in LOSSES.items() if e.from_embeddings]
            raise RecipeError(f"{src}: {where}loss.starbucks: loss {loss['name']} cannot compute its loss from given "
                              f"embeddings, which Starbucks needs for every (layers, dims) rung; use "
                              f"{' or '.join(able)} with starbucks")
        for w in wrappers:
            loss[w] = _validate_section(loss[w], WRAPPERS[w], f"{where}loss.{w}.", src)
            _check_wrapper(w, loss[w], c.get("model"), src, f"{where}loss.{w}")

    def _check_extra(self, c: dict, src: str) -> list[dict]:
        extra = c["data"]["extra"] or []
        out = []
        for i, item in enumerate(extra):
            where = f"data.extra[{i}]"
            if not isinstance(item, dict):
                raise RecipeError(f"{src}: {where}: must be a mapping {{train, format, loss}}, got {item!r}")
            sub = _validate_section(item, {"train": Key(str, REQUIRED), "format": Key(str, "pairs", choices=DATA_FORMATS),
                                           "split": Key(str, "train"), "max_sentences": Key((int, _NONE), None, low=1),
                                           "loss": SCHEMA["loss"]}, f"{where}.", src)
            p = resolve_path(sub["train"])
            if not (p.is_dir() if sub["format"] == "beir" else p.is_file()):
                raise RecipeError(f"{src}: {where}.train: not found: {p}")
            if sub["loss"]["name"] not in LOSSES:
                raise RecipeError(f"{src}: {where}.loss.name: unknown loss {sub['loss']['name']!r}; "
                                  f"choose one of {', '.join(LOSSES)}")
            self._check_loss_and_data({"loss": sub["loss"], "data": {"format": sub["format"]}, "model": c["model"]},
                                      src, f"{where}.")
            sub["path"] = p
            out.append(sub)
        if out and c["sampler"]["name"] not in ("random", "no_duplicates"):
            raise RecipeError(f"{src}: sampler.name: {c['sampler']['name']} works on one dataset; data.extra needs "
                              "random or no_duplicates")
        return out

    def stage_recipes(self) -> list[Recipe]:
        """The recipe of every stage (``stages:``), each the base recipe with the stage's sections merged
        in; stage i+1 starts from stage i's output. Validated here, before any model loads.

        Pooling is set once, for the first stage (the top-level ``pooling``, or ``stages[0].pooling``):
        a later stage continues the previous stage's model, its pooling module and that module's
        trained weights included. A later stage that sets ``pooling`` is refused rather than applied,
        since replacing the module mid-training would throw away what the earlier stages trained
        (a new latent-attention module starts as plain mean pooling).
        """
        stages = self.config.get("stages") or []
        out: list[Recipe] = []
        for i, st in enumerate(stages):
            where = f"stages[{i}]"
            if not isinstance(st, dict):
                raise RecipeError(f"{self.source}: {where}: must be a mapping, got {st!r}")
            unknown = sorted(set(st) - set(STAGE_KEYS), key=str)
            if unknown:
                raise RecipeError(f"{self.source}: {where}.{unknown[0]}: unknown key; a stage may set "
                                  f"{', '.join(STAGE_KEYS)}")
            later_pool = st.get("pooling") or {}
            if i > 0 and isinstance(later_pool, dict) and (set(later_pool) - {"name"}
                                                           or later_pool.get("name", "keep") != "keep"):
                raise RecipeError(f"{self.source}: {where}.pooling: only the first stage sets pooling; stage {i + 1} "
                                  f"continues stage {i}'s model, its trained pooling module included — move this "
                                  "pooling to the top level or to stages[0]")
            raw = copy.deepcopy(self._raw_without_stages())
            for section in STAGE_KEYS[1:]:
                if section in st:
                    if not isinstance(st[section], dict):
                        raise RecipeError(f"{self.source}: {where}.{section}: must be a mapping")
                    raw.setdefault(section, {})
                    raw[section] = {**(raw.get(section) or {}), **st[section]}
            last = i == len(stages) - 1
            raw["output"] = str(self.output) if last else f"{self.output}.stage{i + 1}"
            raw["checkpoint_dir"] = str(self.checkpoint_dir / f"stage{i + 1}")
            if i > 0:
                raw["model"] = str(out[-1].output)
                raw["pooling"] = {"name": "keep"}  # the previous stage already set it
            try:
                r = Recipe(_validate_section(raw, SCHEMA, "", self.source), self.source, self.output_option,
                           _stage_model_pending=i > 0)
                if i > 0:  # the same transformer as the first stage's model
                    r.check_against_model(self.config["model"])
            except RecipeError as e:
                msg = str(e)
                prefix = f"{self.source}: "
                raise RecipeError(prefix + where + "." + msg[len(prefix):] if msg.startswith(prefix) else msg) from None
            out.append(r)
        return out

    def _raw_without_stages(self) -> dict:
        raw = copy.deepcopy(self.config)
        raw.pop("stages", None)
        for w in WRAPPERS:
            if raw["loss"].get(w) is None:
                raw["loss"].pop(w, None)
        raw["data"].pop("extra", None) if not raw["data"].get("extra") else None
        return raw

    def with_overrides(self, *, max_steps: int | None = None, output: str | os.PathLike | None = None) -> Recipe:
        """A copy with ``training.max_steps`` and/or ``output`` replaced (the CLI's options), validated again."""
        c = copy.deepcopy(self.config)
        option = self.output_option
        if max_steps is not None:
            c["training"]["max_steps"] = max_steps
            _check_range(_coerce(max_steps, SCHEMA["training"]["max_steps"].types, "--max-steps", self.source),
                         SCHEMA["training"]["max_steps"], "--max-steps", self.source)
        if output is not None:
            c["output"] = str(output)
            option = "--out"
        return Recipe(c, self.source, option)


#: larger loss weights overflow float32 gradients (AdamW squares them)
_MAX_LOSS_WEIGHT = 1e6


def _check_wrapper(name: str, cfg: dict, model, src: str, where: str) -> None:
    """Dims and ladders: whole numbers, increasing, within the model (read from its config, no weights)."""
    from embedkit.models.submodel import model_shape

    shape = None if model not in (None, "default") and not Path(str(model)).expanduser().exists() else \
        model_shape(None if model in (None, "default") else model)
    if name in ("matryoshka", "matryoshka2d"):
        dims = cfg["dims"]
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise RecipeError(f"{src}: {where}.dims: must be a non-empty list of whole numbers >= 1, got {dims!r}")
        if shape and max(dims) > shape[1]:
            raise RecipeError(f"{src}: {where}.dims: {max(dims)} is beyond the model's width {shape[1]}")
        if cfg["weights"] is not None and (len(cfg["weights"]) != len(dims) or any(
                isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0
                for w in cfg["weights"])):
            raise RecipeError(f"{src}: {where}.weights: must be {len(dims)} finite numbers >= 0 (one per dim)")
        if cfg["weights"] is not None and max(cfg["weights"]) > _MAX_LOSS_WEIGHT:
            raise RecipeError(f"{src}: {where}.weights: {max(cfg['weights']):g} is above {_MAX_LOSS_WEIGHT:g}; the "
                              "weights are relative (1 is typical) and larger ones overflow the float32 gradients")
    if name == "starbucks" and cfg["ladder"] is not None:
        from embedkit.training.losses.starbucks import check_ladder

        ladder = cfg["ladder"]
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                        for x in p) for p in ladder):
            raise RecipeError(f"{src}: {where}.ladder: must be a list of [layers, dims] whole-number pairs, got {ladder!r}")
        depth, width = shape if shape else (10**6, 10**9)
        try:
            check_ladder(ladder, depth, width, where=f"{where}.ladder")
        except RecipeError as e:
            raise RecipeError(f"{src}: {e}") from None


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def model_width_and_positions(model) -> tuple[int | None, int | None]:
    """``(hidden size, usable positions)`` of the local model ``model`` (``None``/``"default"``: the
    bundled one), read from its configs (:mod:`embedkit.models.shape`); None for what they do not say."""
    from embedkit.models.loading import resolve_model
    from embedkit.models.shape import read_max_positions, read_shape

    try:
        folder = resolve_model(None if model in (None, "default") else model)
    except EmbedkitError:
        return None, None
    shape = read_shape(folder)
    return (shape.hidden if shape is not None else None), read_max_positions(folder)


def check_pooling_memory(pool: dict, width: int, batch_size: int, max_seq_length: int, prefix: str, *,
                         available: int | None = None, where: str = "this machine") -> None:
    """Refuse a latent-attention ``pool`` section whose training would not fit in memory (one line).

    The estimate (:func:`embedkit.models.pooling_size.latent_attention_terms`, two views of every
    batch row) counts the module alone, not the transformer under it, so a refused size cannot fit;
    the message names the key whose default would save the most. ``available`` defaults to
    :func:`embedkit.validation.available_memory` (the check is skipped when unknown).
    """
    from embedkit.models.pooling_size import latent_attention_terms
    from embedkit.validation import available_memory, fmt_size

    if pool["name"] != "latent_attention":
        return
    avail = available_memory() if available is None else available
    r, m = pool["num_latents"], pool["mlp_ratio"]

    def need(r=r, m=m, b=batch_size, n=max_seq_length) -> int:  # every loss embeds two views (columns) per row
        return sum(latent_attention_terms(width, r, m, rows=2 * b, seq_len=n).values())

    total = need()
    if avail is None or total <= avail:
        return
    # the key to blame: the one whose default value would save the most
    lat, mlp = SCHEMA["pooling"]["num_latents"].default, SCHEMA["pooling"]["mlp_ratio"].default
    b0, n0 = SCHEMA["training"]["batch_size"].default, SCHEMA["training"]["max_seq_length"].default
    key = min(("num_latents", "mlp_ratio", "batch"), key=lambda k: need(
        r=min(r, lat) if k == "num_latents" else r, m=min(m, mlp) if k == "mlp_ratio" else m,
        b=min(batch_size, b0) if k == "batch" else batch_size, n=min(max_seq_length, n0) if k == "batch" else max_seq_length))
    if key == "num_latents":
        what, fix = f"pooling.num_latents: {r}", f"use fewer latents (NV-Embed uses {lat})"
    elif key == "mlp_ratio":
        what, fix = f"pooling.mlp_ratio: {m}", f"use a smaller ratio (the reference uses {mlp})"
    else:
        what = f"training.batch_size: {batch_size} texts of up to {max_seq_length} tokens"
        fix = "use a smaller training.batch_size or training.max_seq_length"
    raise RecipeError(f"{prefix}{what}: training the latent-attention pooling at width {width} needs about "
                      f"{fmt_size(total)}; {where} has {fmt_size(avail)} available — {fix}")


def _check_queue_memory(loss: dict, width: int, batch_size: int, where: str) -> None:
    """ESimCSE's queue of negatives: ``queue_size`` (or ``queue_factor`` x batch) embeddings, plus the
    batch x queue similarities and their gradient, must fit in this machine's memory."""
    from embedkit.validation import available_memory, fmt_size

    if loss["name"] != "esimcse":
        return
    size = loss["queue_size"] if loss["queue_size"] is not None else round(loss["queue_factor"] * batch_size)
    need = 4 * size * (width + 2 * batch_size)
    avail = available_memory()
    if avail is not None and need > avail:
        key = "queue_size" if loss["queue_size"] is not None else "queue_factor"
        raise RecipeError(f"{where}.{key}: a queue of {size:,} negatives of width {width} needs about {fmt_size(need)}; "
                          f"this machine has {fmt_size(avail)} available — 2.5 x the batch size is the reference's")


def _check_eval_set(path: Path, src: str, where: str) -> None:
    """Read an STS evaluation set now (a bad score must fail before the model loads, not at the first eval)."""
    from embedkit.data import read_sts_tsv

    try:
        read_sts_tsv(path)
    except EmbedkitError as e:
        raise RecipeError(f"{src}: {where}: {e}") from None


def validate_recipe(raw: Any, source: str = "<dict>") -> Recipe:
    """Validate a parsed recipe (a dict); raises :class:`~embedkit.errors.RecipeError` naming the key."""
    return Recipe(_validate_section(raw if raw is not None else {}, SCHEMA, "", source), source)


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a YAML recipe.

    Raises:
        RecipeError: a missing file, a file that is not UTF-8 (with the byte offset and line),
            invalid YAML, or any invalid key (named with the file).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {p}")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RecipeError(f"{p.name}:{line}: not valid UTF-8 ({e.reason} at byte {e.start}); "
                          "save the recipe as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{p.name}: not valid YAML: {' '.join(str(e).split())}") from None
    return validate_recipe(raw, p.name)
