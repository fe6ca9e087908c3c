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


def read_training_data(path: Path, fmt: str, loss_name: str, *, split: str = "train", max_rows: int | None = None,
                       min_chars: int = 1, source: str = "<recipe>", where: str = "data.train") -> dict[str, list]:
    """The columns a loss trains on, read from ``path`` in ``fmt`` (see ``data.format`` in the recipe).

    ``sentences``: one text per line, filling every column the loss reads (SimCSE-style views);
    ``pairs``: ``anchor positive [negative_1 ...]``; ``scored_pairs``: ``sentence1 sentence2 score``;
    ``beir``: ``anchor`` = query, ``positive`` = relevant document (title + text) from qrels/<split>.tsv.
    """
    from embedkit.data import read_beir, read_sts_tsv, read_text_lines, read_text_pairs
    from embedkit.training.registry import LOSSES

    if fmt == "sentences":
        texts = [t.strip() for t in read_text_lines(path)]
        texts = [t for t in texts if len(t) >= max(1, min_chars)][:max_rows]
        return {col: texts for col in LOSSES[loss_name].columns}
    if fmt == "pairs":
        rows = read_text_pairs(path)[:max_rows]
        names = ["anchor", "positive"] + [f"negative_{i}" for i in range(1, len(rows[0]) - 1)]
        return {n: [r[j] for r in rows] for j, n in enumerate(names)}
    if fmt == "scored_pairs":
        ds = read_sts_tsv(path)
        n = len(ds.scores) if max_rows is None else min(max_rows, len(ds.scores))
        return {"sentence1": ds.sentences1[:n], "sentence2": ds.sentences2[:n], "score": [float(x) for x in ds.scores[:n]]}
    if fmt == "beir":
        ds = read_beir(path, split=split, on_empty="skip")
        pairs = [(ds.queries[q], (ds.corpus[d].get("title", "") + " " + ds.corpus[d]["text"]).strip())
                 for q, rel in ds.qrels.items() for d, r in rel.items() if r > 0 and q in ds.queries and d in ds.corpus]
        pairs = pairs[:max_rows]
        return {"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]}
    raise RecipeError(f"{source}: {where}: unknown data.format {fmt!r}")


def mined_columns(path: Path, fmt: str, mine: dict, recipe_model, *, split: str = "train", max_rows: int | None = None,
                  max_seq_length: int | None = None, miners: dict | None = None, source: str = "<recipe>",
                  where: str = "data") -> tuple[dict[str, list], dict]:
    """``(anchor, positive, negative_1 ..)`` columns mined before training (a recipe's ``data.mine``), and the
    mining statistics.

    ``beir``: the folder's qrels ``split`` pairs, negatives from its corpus; ``scored_pairs``: STS pairs
    scoring at least ``mine.min_score``, both directions, negatives from the file's other sentences
    (:func:`embedkit.training.mining.sts_pairs`). The miner is ``mine.model`` (default: the recipe's
    model), truncating at ``max_seq_length`` tokens like training does; its embeddings are cached, so a
    second stage or a resumed run mines the same negatives again in seconds. Pairs that got fewer than
    ``mine.negatives`` negatives (every other candidate scored above the threshold) are left out.

    Raises:
        RecipeError: no pair got ``mine.negatives`` negatives (named with ``source`` and ``where``).
    """
    from embedkit.models.loading import load_encoder
    from embedkit.training.mining import mine_hard_negatives, sts_pairs

    if fmt == "beir":
        from embedkit.data import read_corpus, read_retrieval_pairs

        corpus = read_corpus(path)
        pairs = read_retrieval_pairs(path, doc_ids=corpus.ids, split=split)
        ids, texts = corpus.ids, corpus.texts
    else:
        pairs, ids, texts = sts_pairs(path, mine["min_score"])
    name = mine.get("model") or recipe_model
    name = None if name in (None, "default") else name
    miners = {} if miners is None else miners
    key = (name, max_seq_length)
    if key not in miners:
        miners[key] = load_encoder(name)
        if max_seq_length:
            miners[key].max_seq_length = max_seq_length
    mined = mine_hard_negatives(pairs, ids, texts, miners[key], num_negatives=mine["negatives"],
                                max_positive_ratio=mine["max_positive_ratio"], candidates=mine.get("candidates"),
                                spec=mine.get("spec", "float"))
    text = dict(zip(ids, texts))
    n = mine["negatives"]
    rows = [(q, text[p], negs) for q, p, negs in zip(mined.queries, mined.positive_ids, mined.negative_ids)
            if len(negs) == n][:max_rows]
    short = sum(len(x) < n for x in mined.negative_ids)
    if not rows:
        raise RecipeError(f"{source}: {where}.mine: no pair of {path} got {n} negatives (the other candidates of "
                          f"{mined.stats['candidates_per_query']} per query scored above the threshold); raise "
                          "mine.candidates or mine.max_positive_ratio")
    if short:
        logger.warning("mining %s: %d of %d pairs got fewer than %d negatives and were left out", path, short,
                       len(pairs), n)
    cols = {"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]}
    for j in range(n):
        cols[f"negative_{j + 1}"] = [text[r[2][j]] for r in rows]
    return cols, {**mined.stats, "rows": len(rows), "model": name or "default"}


def _rows(columns: dict[str, list]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def apply_pooling(model, cfg: dict, *, batch_size: int = 1, max_seq_length: int | None = None,
                  source: str = "") -> None:
    """Replace the model's pooling module as the recipe's ``pooling`` section asks (``keep`` does nothing).

    A latent-attention module is checked against the memory of the device the model is on (free GPU
    memory, or the RAM this process may still use) before it is allocated, for ``batch_size`` texts
    of up to ``max_seq_length`` tokens (default: the model's); ``source`` prefixes the error.

    Raises:
        RecipeError: no pooling module to replace, ``num_heads`` does not divide the width with
            ``head_width: split``, or the module would not fit in memory (one line naming the key).
    """
    name = cfg["name"]
    if name == "keep":
        return
    from sentence_transformers.sentence_transformer.modules import Pooling

    idx = next((i for i in range(1, len(model)) if type(model[i]).__name__ in ("Pooling", "LatentAttentionPooling")), None)
    if idx is None:
        raise RecipeError(f"pooling.name: the model has no pooling module to replace ({[type(m).__name__ for m in model]})")
    dim = model[0].get_embedding_dimension()
    if name == "latent_attention":
        from embedkit.models.pooling import LatentAttentionPooling

        split = cfg.get("head_width", "full") == "split"  # full (default): NV-Embed's full-width heads
        if split and dim % cfg["num_heads"]:
            raise RecipeError(f"{source}pooling.num_heads: {cfg['num_heads']} does not divide the model's width {dim} "
                              "(head_width: split; head_width: full takes any number of heads)")
        from embedkit.training.recipe import check_pooling_memory

        avail, where = _device_memory(next(model.parameters()).device)
        check_pooling_memory(cfg, dim, batch_size, max_seq_length or model.max_seq_length or 1, source,
                             available=avail, where=where)
        new = LatentAttentionPooling(dim, num_latents=cfg["num_latents"], num_heads=cfg["num_heads"],
                                     mlp_ratio=cfg["mlp_ratio"], head_dim=dim // cfg["num_heads"] if split else dim)
    else:
        new = Pooling(dim, "mean", include_prompt=False)
    new.to(next(model.parameters()).device)
    model._modules[str(idx)] = new


def _device_memory(device) -> tuple[int | None, str]:
    """(bytes free, how to name it) on ``device``: a GPU's free memory, else this machine's RAM."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free), f"GPU {device}"
        except (RuntimeError, AssertionError):
            pass
    from embedkit.validation import available_memory

    return available_memory(), "this machine"


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
    if recipe.config.get("stages"):
        stages = recipe.stage_recipes()  # every stage validated before anything runs
        result = None
        for i, stage in enumerate(stages, 1):
            if not resume or not _stage_done(stage):
                logger.info("stage %d of %d: %s", i, len(stages), stage.config["data"]["train"])
                result = train_recipe(stage, resume=resume, overwrite=overwrite, show_progress=show_progress,
                                      callbacks=callbacks)
            else:
                logger.info("stage %d of %d already done (%s)", i, len(stages), stage.output)
        return result
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
    if resume_from:
        from embedkit.training import distributed
        from embedkit.training.trainer import check_resume_compatible

        check_resume_compatible(resume_from, distributed.world_size(), t["batch_size"])
    inputs = _inputs(recipe)
    prepare_output(recipe.output, "model", overwrite=overwrite or resume, inputs=inputs, option=recipe.output_option)
    d = c["data"]
    miners: dict = {}
    mining_stats = {}
    if d["format"] == "sentences":
        texts = read_sentences(recipe)
        columns = None
        say("%d training sentences from %s", len(texts), recipe.train_path)
    elif d.get("mine"):
        columns, mining_stats["data.train"] = mined_columns(
            recipe.train_path, d["format"], d["mine"], c["model"], split=d["split"], max_rows=d["max_sentences"],
            max_seq_length=t["max_seq_length"], miners=miners, source=recipe.source, where="data")
        if _rows(columns) < t["batch_size"]:
            raise RecipeError(f"{recipe.source}: data.train: {_rows(columns)} mined rows from {recipe.train_path}, "
                              f"fewer than one batch ({t['batch_size']})")
        texts = columns["anchor"]
        say("%d training rows with %d mined negatives each from %s", _rows(columns), len(columns) - 2,
            recipe.train_path)
    else:
        columns = read_training_data(recipe.train_path, d["format"], c["loss"]["name"], split=d["split"],
                                     max_rows=d["max_sentences"], source=recipe.source)
        if _rows(columns) < t["batch_size"]:
            raise RecipeError(f"{recipe.source}: data.train: {_rows(columns)} training rows in {recipe.train_path}, "
                              f"fewer than one batch ({t['batch_size']})")
        texts = columns.get("anchor") or columns.get("sentence1")
        say("%d training rows (%s) from %s", _rows(columns), d["format"], recipe.train_path)
    extra_data = []
    for i, x in enumerate(recipe.extra):
        if x.get("mine"):
            cols, mining_stats[f"data.extra[{i}]"] = mined_columns(
                x["path"], x["format"], x["mine"], c["model"], split=x["split"], max_rows=x["max_sentences"],
                max_seq_length=t["max_seq_length"], miners=miners, source=recipe.source, where=f"data.extra[{i}]")
        else:
            cols = read_training_data(x["path"], x["format"], x["loss"]["name"], split=x["split"],
                                      max_rows=x["max_sentences"], source=recipe.source, where=f"data.extra[{i}].train")
        extra_data.append(cols)
    miners.clear()  # the mining models are not needed any more
    for where, cols, loss_cfg, path in [("data.train", columns, c["loss"], recipe.train_path),
                                        *((f"data.extra[{i}].train", x, e["loss"], e["path"])
                                          for i, (x, e) in enumerate(zip(extra_data, recipe.extra)))]:
        if not loss_cfg["in_batch_negatives"] and not any(k.startswith("negative") for k in (cols or {})):
            raise RecipeError(f"{recipe.source}: {where}: {path} has no negative columns, and "
                              "loss.in_batch_negatives: false scores each anchor against its own negatives only; "
                              "add them with `embedkit mine`")
    say("recipe %s: loss %s, sampler %s, batch %d, %s", recipe.source, c["loss"]["name"], c["sampler"]["name"],
        t["batch_size"], f"max_steps {t['max_steps']}" if t["max_steps"] else f"epochs {t['epochs']:g}")

    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from transformers.utils import logging as hf_logging

    from embedkit._io import atomic_directory, atomic_write_json, mark_output
    from embedkit.models.loading import load_encoder
    from embedkit.training.registry import LOSSES, build_loss, build_sampler, wrap_loss
    from embedkit.training.trainer import EmbedkitTrainer, StsEvaluator

    hf_logging.set_verbosity_error()
    torch.manual_seed(t["seed"])
    model = load_encoder(c["model"])
    model.max_seq_length = t["max_seq_length"]
    apply_pooling(model, c["pooling"], batch_size=t["batch_size"], max_seq_length=t["max_seq_length"],
                  source=f"{recipe.source}: ")
    loss_name = c["loss"]["name"]
    loss = wrap_loss(model, build_loss(loss_name, model, c["loss"]), c["loss"])
    dataset = Dataset.from_dict(columns if columns is not None else {col: texts for col in LOSSES[loss_name].columns})
    if recipe.extra:  # several datasets, each with its own loss (sentence-transformers' multi-dataset training)
        from datasets import DatasetDict

        dataset = DatasetDict({"main": dataset, **{f"extra{i}": Dataset.from_dict(x) for i, x in enumerate(extra_data)}})
        loss = {"main": loss, **{f"extra{i}": wrap_loss(model, build_loss(x["loss"]["name"], model, x["loss"]), x["loss"])
                                 for i, x in enumerate(recipe.extra)}}
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
        ddp_timeout=t["ddp_timeout"],
        # query-side instructions (NV-Embed): prepended to the named columns; pooling modules with
        # include_prompt=False (mean pooling set by `pooling`, latent attention) leave their tokens out
        prompts=_prompts(t["prompts"], recipe.extra),
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
    from embedkit.training import distributed

    if distributed.is_main_process():
        # the folder may have changed during a long run: check again before replacing anything
        try:
            prepare_output(recipe.output, "model", overwrite=True, inputs=inputs, option=recipe.output_option)
        except Exception as e:
            raise type(e)(f"{e} (the trained weights are in the last checkpoint in {ckpt_dir})") from None
        with atomic_directory(recipe.output) as tmp:
            model.save(str(tmp))
            sizes = _trained_sizes(model, [c["loss"], *(x["loss"] for x in recipe.extra)])
            if sizes is not None:  # warns later when an untrained (layers, dims) is asked for
                from embedkit.models.submodel import SIZES_FILE

                atomic_write_json(tmp / SIZES_FILE, sizes)
            report = result.as_dict()
            report["recipe"] = c
            if mining_stats:
                report["mining"] = mining_stats
            atomic_write_json(tmp / "train_report.json", report)
            mark_output(tmp, "model")
        best = (f", best STS-B dev {trainer.state.best_metric:.2f} at {trainer.state.best_model_checkpoint}"
                if select_best and trainer.state.best_metric is not None else "")
        say("saved %s (step %d%s)", recipe.output, out.global_step, best)
    distributed.barrier()
    return result


def _trained_sizes(model, loss_cfgs: list[dict]) -> dict | None:
    """The (layers, dims) sizes the recipe's Matryoshka / 2DMSE / Starbucks losses trained (union over
    the main loss and ``data.extra``), or None when none of them has such a wrapper."""
    from embedkit.models.submodel import model_depth, model_width
    from embedkit.training.losses.starbucks import trained_sizes

    found = [t for t in (trained_sizes(cfg, model_depth(model), model_width(model)) for cfg in loss_cfgs) if t]
    if not found:
        return None
    sizes = sorted({tuple(x) for t in found for x in t["sizes"]})
    return {"method": "+".join(dict.fromkeys(t["method"] for t in found)), "sizes": [list(x) for x in sizes]}


def _prompts(main, extra: list[dict]):
    """The trainer's ``prompts``: ``training.prompts`` for every dataset, unless a ``data.extra`` entry sets
    its own ``prompts`` (e.g. NV-Embed's STS instruction on both sides); then one mapping per dataset."""
    if not any(x.get("prompts") is not None for x in extra):
        return main
    return {"main": main or {}, **{f"extra{i}": (x["prompts"] if x.get("prompts") is not None else main or {})
                                   for i, x in enumerate(extra)}}


def _stage_done(stage: Recipe) -> bool:
    """A stage whose output folder is a finished embedkit model (resuming skips it)."""
    from embedkit._io import output_kind

    return output_kind(stage.output) == "model" and (stage.output / "train_report.json").is_file()
