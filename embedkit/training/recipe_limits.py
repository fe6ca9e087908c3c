"""Recipe checks that need more than the schema: loss wrappers against the model, memory estimates of
latent-attention pooling and the ESimCSE queue, evaluation sets read before training. Run by
:class:`~embedkit.training.recipe.Recipe` before the model loads where the model's config allows."""

from __future__ import annotations

import math
from pathlib import Path

from embedkit.errors import EmbedkitError, RecipeError
from embedkit.training.schema import SCHEMA

_MAX_LOSS_WEIGHT = 1e6


def check_wrapper(name: str, cfg: dict, model, src: str, where: str) -> None:
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


def whole(x) -> bool:
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
    heads = pool.get("num_heads", 8)
    inner = width if pool.get("head_width", "full") == "split" else heads * width  # num_heads x head width

    def need(r=r, m=m, b=batch_size, n=max_seq_length) -> int:  # every loss embeds two views (columns) per row
        return sum(latent_attention_terms(width, r, m, rows=2 * b, seq_len=n, inner=inner).values())

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


def check_queue_memory(loss: dict, width: int, batch_size: int, where: str) -> None:
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


def check_eval_set(path: Path, src: str, where: str) -> None:
    """Read an STS evaluation set now (a bad score must fail before the model loads, not at the first eval)."""
    from embedkit.data import read_sts_tsv

    try:
        read_sts_tsv(path)
    except EmbedkitError as e:
        raise RecipeError(f"{src}: {where}: {e}") from None
