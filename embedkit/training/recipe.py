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
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType
from typing import Any

from embedkit.errors import EmbedkitError, RecipeError
from embedkit.training.recipe_limits import (
    check_eval_set,
    check_pooling_memory,
    check_queue_memory,
    check_wrapper,
    model_width_and_positions,
    whole,
)
from embedkit.training.registry import LOSSES, SAMPLERS
from embedkit.training.schema import (
    DATA_FORMATS,
    MINE,
    REQUIRED,
    SCHEMA,
    STAGE_KEYS,
    WRAPPERS,
    Key,
    check_range,
    coerce,
    resolve_path,
    validate_section,
)

__all__ = ["SCHEMA", "Recipe", "RecipeError", "validate_recipe", "load_recipe", "resolve_path"]

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
        self._check_mine(c["data"], src, "data.")
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
            check_eval_set(p, src, f"eval.sets[{i}]")
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

        ``pooling``: with ``head_width: split``, ``num_heads`` must divide the width; training the latent-attention module
        must fit in this machine's memory; ``training.max_seq_length`` must be within the model's
        positions. Skipped for what the config does not say (a hub name, an unusual layout); the
        pooling is checked again against the training device once the model has loaded
        (:func:`embedkit.training.run.apply_pooling`).
        """
        c, src = self.config, self.source
        width, limit = model_width_and_positions(model)
        pool = c["pooling"]
        if pool["name"] == "latent_attention" and whole(width):
            if pool["head_width"] == "split" and width % pool["num_heads"]:
                raise RecipeError(f"{src}: {where}pooling.num_heads: {pool['num_heads']} does not divide the model's "
                                  f"width {width} (head_width: split; head_width: full takes any number of heads)")
            check_pooling_memory(pool, width, c["training"]["batch_size"], c["training"]["max_seq_length"],
                                 f"{src}: {where}")
        if whole(width):
            for loss, key in [(c["loss"], "loss"), *((x["loss"], f"data.extra[{i}].loss")
                                                     for i, x in enumerate(getattr(self, "extra", [])))]:
                check_queue_memory(loss, width, c["training"]["batch_size"], f"{src}: {where}{key}")
        n = c["training"]["max_seq_length"]
        if limit is not None and n > limit:
            raise RecipeError(f"{src}: {where}training.max_seq_length: {n} is beyond the model's {limit} positions "
                              f"(max_position_embeddings in its config.json); use at most {limit}")

    @staticmethod
    def _check_mine(data: dict, src: str, where: str) -> None:
        """``mine``: validated (defaults filled in place); only BEIR folders and STS files can be mined."""
        if data.get("mine") is None:
            return
        data["mine"] = validate_section(data["mine"], MINE, f"{where}mine.", src)
        if data["format"] not in ("beir", "scored_pairs"):
            raise RecipeError(f"{src}: {where}mine: mining needs format beir (qrels pairs and the folder's corpus) "
                              f"or scored_pairs (STS pairs and the file's other sentences), not {data['format']}")
        model = data["mine"]["model"]
        if model not in (None, "default"):
            from embedkit.models.loading import resolve_model

            try:
                resolve_model(model)
            except EmbedkitError as e:
                raise RecipeError(f"{src}: {where}mine.model: {e}") from e

    @staticmethod
    def _check_loss_and_data(c: dict, src: str, where: str = "") -> None:
        from embedkit.training.registry import LOSSES

        loss, fmt = c["loss"], c["data"]["format"]
        if c["data"].get("mine"):
            fmt = "pairs"  # mined: (anchor, positive, negative_1 ..) rows
        entry = LOSSES[loss["name"]]
        if fmt not in entry.formats:
            raise RecipeError(f"{src}: {where}loss.name: {loss['name']} trains on data.format "
                              f"{' or '.join(entry.formats)}, not {fmt}")
        if not loss["in_batch_negatives"] and loss["name"] != "mnrl":
            raise RecipeError(f"{src}: {where}loss.in_batch_negatives: only mnrl can turn in-batch negatives off")
        if not loss["in_batch_negatives"] and fmt != "pairs":
            raise RecipeError(f"{src}: {where}loss.in_batch_negatives: false scores each anchor against its own "
                              f"negatives only, and data.format {fmt} has none; use format pairs with negative "
                              "columns (e.g. from `embedkit mine`)")
        wrappers = [w for w in WRAPPERS if loss[w] is not None]
        if len(wrappers) > 1:
            raise RecipeError(f"{src}: {where}loss.{wrappers[1]}: only one of matryoshka, matryoshka2d, starbucks at a time")
        if "starbucks" in wrappers and entry.from_embeddings is False:
            able = [n for n, e in LOSSES.items() if e.from_embeddings]
            raise RecipeError(f"{src}: {where}loss.starbucks: loss {loss['name']} cannot compute its loss from given "
                              f"embeddings, which Starbucks needs for every (layers, dims) rung; use "
                              f"{' or '.join(able)} with starbucks")
        for w in wrappers:
            loss[w] = validate_section(loss[w], WRAPPERS[w], f"{where}loss.{w}.", src)
            check_wrapper(w, loss[w], c.get("model"), src, f"{where}loss.{w}")

    def _check_extra(self, c: dict, src: str) -> list[dict]:
        extra = c["data"]["extra"] or []
        out = []
        for i, item in enumerate(extra):
            where = f"data.extra[{i}]"
            if not isinstance(item, dict):
                raise RecipeError(f"{src}: {where}: must be a mapping {{train, format, loss}}, got {item!r}")
            sub = validate_section(item, {"train": Key(str, REQUIRED), "format": Key(str, "pairs", choices=DATA_FORMATS),
                                           "split": Key(str, "train"), "max_sentences": Key((int, NoneType), None, low=1),
                                           "prompts": Key((dict, str, NoneType), None),
                                           "mine": Key((dict, NoneType), None),
                                           "loss": SCHEMA["loss"]}, f"{where}.", src)
            self._check_mine(sub, src, f"{where}.")
            pr = sub["prompts"]
            if isinstance(pr, dict) and not all(isinstance(k, str) and isinstance(v, str) for k, v in pr.items()):
                raise RecipeError(f"{src}: {where}.prompts: must map column names to instruction strings, got {pr!r}")
            p = resolve_path(sub["train"])
            if not (p.is_dir() if sub["format"] == "beir" else p.is_file()):
                raise RecipeError(f"{src}: {where}.train: not found: {p}")
            if sub["loss"]["name"] not in LOSSES:
                raise RecipeError(f"{src}: {where}.loss.name: unknown loss {sub['loss']['name']!r}; "
                                  f"choose one of {', '.join(LOSSES)}")
            self._check_loss_and_data({"loss": sub["loss"], "data": {"format": sub["format"], "mine": sub["mine"]},
                                       "model": c["model"]}, src, f"{where}.")
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
            for d in [raw.get("data") or {}, *((raw.get("data") or {}).get("extra") or [])]:
                if isinstance(d, dict) and isinstance(d.get("mine"), dict) and d["mine"].get("model") is None:
                    d["mine"] = {**d["mine"], "model": self.config["model"] or "default"}  # one miner for all stages
            last = i == len(stages) - 1
            raw["output"] = str(self.output) if last else f"{self.output}.stage{i + 1}"
            raw["checkpoint_dir"] = str(self.checkpoint_dir / f"stage{i + 1}")
            if i > 0:
                raw["model"] = str(out[-1].output)
                raw["pooling"] = {"name": "keep"}  # the previous stage already set it
            try:
                r = Recipe(validate_section(raw, SCHEMA, "", self.source), self.source, self.output_option,
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
            check_range(coerce(max_steps, SCHEMA["training"]["max_steps"].types, "--max-steps", self.source),
                         SCHEMA["training"]["max_steps"], "--max-steps", self.source)
        if output is not None:
            c["output"] = str(output)
            option = "--out"
        return Recipe(c, self.source, option)


#: larger loss weights overflow float32 gradients (AdamW squares them)
def validate_recipe(raw: Any, source: str = "<dict>") -> Recipe:
    """Validate a parsed recipe (a dict); raises :class:`~embedkit.errors.RecipeError` naming the key."""
    return Recipe(validate_section(raw if raw is not None else {}, SCHEMA, "", source), source)


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
