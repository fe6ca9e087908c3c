"""The recipe schema: every section's keys with their types, defaults and ranges, and the checks that
apply them (one line naming the file and key). :mod:`embedkit.training.recipe` builds a
:class:`~embedkit.training.recipe.Recipe` on top of it."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import NoneType
from typing import Any

from embedkit.errors import RecipeError

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
    "model": Key((str, NoneType), None),
    "output": Key(str, REQUIRED),
    "checkpoint_dir": Key((str, NoneType), None),
    "data": {
        "train": Key(str, REQUIRED),
        "format": Key(str, "sentences", choices=DATA_FORMATS),
        "split": Key(str, "train"),
        "extra": Key((list, NoneType), None, hint="a list of {train, format, loss} datasets trained alongside"),
        "max_sentences": Key((int, NoneType), None, low=1, hint="or null for all"),
        "min_chars": Key(int, 1, low=0),
        "mine": Key((dict, NoneType), None, hint="{negatives: 3}: hard negatives mined before training (beir, scored_pairs)"),
    },
    "loss": {
        "name": Key(str, REQUIRED),
        "temperature": Key(float, 0.05, low=1e-4, hint="similarities are divided by it; 0.05 in SimCSE"),
        "dup_rate": Key(float, 0.32, low=0, high=1),
        "max_dup": Key(int, 10, low=0),
        "momentum": Key(float, 0.995, low=0, high=1, high_open=True),
        "queue_size": Key((int, NoneType), None, low=0, hint="or null for queue_factor x batch size"),
        "queue_factor": Key(float, 2.5, low=0),
        "in_batch_negatives": Key(bool, True),
        "gather_across_devices": Key(bool, True),
        "matryoshka": Key((dict, NoneType), None),
        "matryoshka2d": Key((dict, NoneType), None),
        "starbucks": Key((dict, NoneType), None),
    },
    "pooling": {
        "name": Key(str, "keep", choices=("keep", "mean", "latent_attention")),
        "num_latents": Key(int, 512, low=1),
        "num_heads": Key(int, 8, low=1),
        "head_width": Key(str, "full", choices=("full", "split"),
                          hint="full: every head as wide as the model (NV-Embed); split: width / num_heads each"),
        "mlp_ratio": Key(int, 4, low=1),
    },
    "stages": Key((list, NoneType), None, hint="a list of stages, each overriding data / loss / training"),
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
        "max_steps": Key((int, NoneType), None, low=1, hint="or null to train for `epochs`"),
        "warmup_ratio": Key(float, 0.0, low=0, high=1, high_open=True),
        "weight_decay": Key(float, 0.0, low=0),
        "checkpoint_every": Key(int, 125, low=1),
        "keep_checkpoints": Key((int, NoneType), 2, low=1, hint="or null to keep every checkpoint"),
        "logging_steps": Key(int, 25, low=1),
        "fp16": Key(bool, False),
        "bf16": Key(bool, False),
        "use_cpu": Key((bool, NoneType), None),
        "ddp_timeout": Key(int, 600, low=1, high=365 * 86400, hint="seconds a collective waits for the other processes"),
        "prompts": Key((dict, str, NoneType), None,
                       hint="instruction prepended to a column, e.g. {anchor: 'Instruct: ...\\nQuery: '}"),
    },
    "eval": {
        "sets": Key((list, NoneType), None),
        "every": Key((int, NoneType), None, low=1, hint="or null for training.checkpoint_every"),
        "select_best": Key(bool, True),
    },
}

# the loss wrappers (one at most): their keys, validated like sections when present
WRAPPERS: dict[str, dict[str, Key]] = {
    "matryoshka": {  # sentence-transformers' MatryoshkaLoss
        "dims": Key(list, REQUIRED),
        "weights": Key((list, NoneType), None),
    },
    "matryoshka2d": {  # sentence-transformers' Matryoshka2dLoss (2DMSE)
        "dims": Key(list, REQUIRED),
        "weights": Key((list, NoneType), None),
        "n_layers_per_step": Key(int, 1),
        "n_dims_per_step": Key(int, 1),
        "last_layer_weight": Key(float, 1.0, low=0),
        "prior_layers_weight": Key(float, 1.0, low=0),
        "kl_div_weight": Key(float, 1.0, low=0),
        "kl_temperature": Key(float, 0.3, low=0, low_open=True),
    },
    "starbucks": {  # embedkit StarbucksLoss
        "ladder": Key((list, NoneType), None, hint="[[layers, dims], ...] or null for the default ladder"),
        "last_layer_weight": Key(float, 1.0, low=0),
        "kl_div_weight": Key(float, 1.0, low=0),
        "kl_temperature": Key(float, 0.3, low=0, low_open=True),
        "kl": Key(str, "dims", choices=("dims", "scores"),
                  hint="dims: the reference's STS KL over embedding coordinates; scores: its retrieval KL"),
        "score_temperature": Key((float, NoneType), None, low=1e-4, hint="or null for the inner loss's temperature"),
        "distil_weight": Key(float, 0.0, low=0, hint="distil every size from the frozen starting model; 0 = off"),
        "anchor_weight": Key(float, 0.0, low=0,
                             hint="pin the full size's embeddings to the frozen starting model's (no regret); 0 = off"),
    },
}

#: ``data.mine`` (and ``data.extra[i].mine``): hard negatives mined before training, TopK-PercPos
#: (:mod:`embedkit.training.mining`); a BEIR folder's qrels pairs against its corpus, or an STS file's pairs
#: scoring >= min_score (both directions) against its other sentences
MINE: dict[str, Key] = {
    "negatives": Key(int, 7, low=1),
    "max_positive_ratio": Key(float, 0.95, low=0, high=1, low_open=True),
    "candidates": Key((int, NoneType), None, low=1, hint="or null for 4 x negatives + 10"),
    "min_score": Key(float, 4.0, hint="scored_pairs: the lowest score kept as a positive"),
    "model": Key((str, NoneType), None, hint="the model that mines; null: the recipe's (first stage's) model"),
    "spec": Key(str, "float"),
}

#: keys a stage may override (each a section of the recipe)
STAGE_KEYS = ("name", "data", "loss", "sampler", "training", "eval", "pooling")

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
               NoneType: "null", dict: "a mapping"}


def type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def coerce(value, types, where: str, src: str):
    types = types if isinstance(types, tuple) else (types,)
    if value is None:
        if NoneType in types:
            return None
        raise RecipeError(f"{src}: {where}: must be {type_name(types)}, got null")
    if isinstance(value, bool):
        if bool in types:
            return value
        raise RecipeError(f"{src}: {where}: must be {type_name(types)}, got {value!r}")
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
        if t not in (int, float, bool, NoneType) and isinstance(value, t):
            return value
    raise RecipeError(f"{src}: {where}: must be {type_name(types)}, got {type(value).__name__} {value!r}")


def _num(x) -> str:
    """A bound or value for a message: whole numbers exactly, others as ``%g``."""
    return str(x) if x is None or isinstance(x, int) and not isinstance(x, bool) else f"{x:g}"


def check_range(value, key: Key, where: str, src: str) -> None:
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


def validate_section(raw: dict, schema: dict, prefix: str, src: str) -> dict:
    if not isinstance(raw, dict):
        raise RecipeError(f"{src}: {prefix.rstrip('.') or 'recipe'}: must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema), key=str)
    if unknown:
        raise RecipeError(f"{src}: {prefix}{unknown[0]}: unknown key; allowed here: {', '.join(sorted(schema))}")
    out = {}
    for name, spec in schema.items():
        where = prefix + name
        if isinstance(spec, dict):
            out[name] = validate_section(raw.get(name) or {}, spec, where + ".", src)
            continue
        if name not in raw:
            if spec.default is REQUIRED:
                raise RecipeError(f"{src}: {where}: required key is missing")
            out[name] = copy.deepcopy(spec.default)
        else:
            out[name] = coerce(raw[name], spec.types, where, src)
            check_range(out[name], spec, where, src)
    return out


def resolve_path(value: str, base: Path | None = None) -> Path:
    """``data:rel/path`` -> the shared data folder; ``~`` expanded; relative paths from the cwd."""
    from embedkit._io import data_dir

    if value.startswith("data:"):
        return data_dir() / value[len("data:"):]
    return Path(value).expanduser()
