"""Name -> builder registries of the training losses and batch samplers a recipe can name.

A recipe's ``loss.name`` and ``sampler.name`` are looked up here (the only tables of those names),
like the compression stages in :mod:`embedkit.compression.spec`. A new loss or sampler is one
decorated function; heavy imports (torch, sentence-transformers) happen inside the builders, so
validating a recipe loads neither.

.. code-block:: python

    from embedkit.training.registry import register_loss

    @register_loss("my_loss")
    def _my_loss(model, cfg):          # cfg: the recipe's validated ``loss`` section
        return MyLoss(model, temperature=cfg["temperature"])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["LOSSES", "SAMPLERS", "LossEntry", "SamplerEntry", "SamplerPlan", "register_loss", "register_sampler",
           "build_loss", "build_sampler", "wrap_loss"]


@dataclass(frozen=True)
class LossEntry:
    """A registered loss: ``build(model, loss_cfg) -> nn.Module``, the dataset columns it reads, and
    whether the built loss offers ``compute_loss_from_embeddings`` (None: not declared)."""

    build: Callable[[Any, dict], Any]
    columns: tuple[str, ...] = ("text",)
    formats: tuple[str, ...] = ("sentences",)
    from_embeddings: bool | None = None


@dataclass
class SamplerPlan:
    """What a sampler builder returns: the trainer's ``batch_sampler`` argument and where its stats live."""

    batch_sampler: Any = "batch_sampler"
    stats: Callable[[], dict | None] = field(default=lambda: None)


@dataclass(frozen=True)
class SamplerEntry:
    """A registered sampler: ``build(texts, model, config, show_progress=...) -> SamplerPlan``."""

    build: Callable[..., SamplerPlan]


#: loss name -> :class:`LossEntry`. The only table of loss names.
LOSSES: dict[str, LossEntry] = {}
#: sampler name -> :class:`SamplerEntry`. The only table of sampler names.
SAMPLERS: dict[str, SamplerEntry] = {}


def register_loss(name: str, *, columns: Sequence[str] = ("text",), formats: Sequence[str] = ("sentences",),
                  from_embeddings: bool | None = None):
    """Decorator: register ``fn(model, loss_cfg)`` as the builder of loss ``name``.

    ``columns`` are the dataset columns it reads when trained on plain sentences (each sentence fills
    every column); ``formats`` are the ``data.format`` values it can train on; ``from_embeddings``
    says whether the built loss has ``compute_loss_from_embeddings`` (the Starbucks wrapper needs it;
    a recipe pairing the two is refused before any model loads when it is False).
    """

    def deco(fn):
        LOSSES[name] = LossEntry(fn, tuple(columns), tuple(formats), from_embeddings)
        return fn

    return deco


def register_sampler(name: str):
    """Decorator: register ``fn(texts, model, config, *, show_progress)`` as the builder of sampler ``name``."""

    def deco(fn):
        SAMPLERS[name] = SamplerEntry(fn)
        return fn

    return deco


def build_loss(name: str, model, cfg: dict):
    """Build the registered loss ``name`` for ``model`` from the recipe's ``loss`` section."""
    from embedkit.errors import RecipeError

    if name not in LOSSES:
        raise RecipeError(f"loss.name: unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name].build(model, cfg)


def build_sampler(name: str, texts: Sequence[str], model, config: dict, *, show_progress: bool = False) -> SamplerPlan:
    """Build the registered batch sampler ``name`` (``config`` is the whole validated recipe)."""
    from embedkit.errors import RecipeError

    if name not in SAMPLERS:
        raise RecipeError(f"sampler.name: unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name].build(texts, model, config, show_progress=show_progress)


# --- built-in losses ----------------------------------------------------------------------------


@register_loss("simcse", from_embeddings=False)
def _simcse(model, cfg: dict):
    from embedkit.training.losses import SimCSELoss

    return SimCSELoss(model, temperature=cfg["temperature"], gather_across_devices=cfg.get("gather_across_devices", True))


@register_loss("esimcse", from_embeddings=False)
def _esimcse(model, cfg: dict):
    from embedkit.training.losses import ESimCSELoss

    return ESimCSELoss(model, temperature=cfg["temperature"], dup_rate=cfg["dup_rate"], max_dup=cfg["max_dup"],
                       momentum=cfg["momentum"], queue_size=cfg["queue_size"], queue_factor=cfg["queue_factor"],
                       gather_across_devices=cfg.get("gather_across_devices", True))


@register_loss("mnrl", columns=("anchor", "positive"), formats=("sentences", "pairs", "beir"), from_embeddings=True)
def _mnrl(model, cfg: dict):
    if not cfg.get("in_batch_negatives", True):
        from embedkit.training.losses.hard_negatives import OwnNegativesLoss

        return OwnNegativesLoss(model, scale=1.0 / cfg["temperature"])
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedkit.training.distributed import world_size

    gather = bool(cfg.get("gather_across_devices", True)) and world_size() > 1
    return MultipleNegativesRankingLoss(model, scale=1.0 / cfg["temperature"], gather_across_devices=gather)


@register_loss("cosent", columns=("sentence1", "sentence2", "score"), formats=("scored_pairs",), from_embeddings=True)
def _cosent(model, cfg: dict):
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    return CoSENTLoss(model)


def wrap_loss(model, loss, cfg: dict):
    """Apply the recipe's loss wrapper (``matryoshka``, ``matryoshka2d`` or ``starbucks``), if any."""
    if cfg.get("matryoshka"):
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        m = cfg["matryoshka"]
        return MatryoshkaLoss(model, loss, m["dims"], matryoshka_weights=m["weights"])
    if cfg.get("matryoshka2d"):
        from embedkit.training.losses.matryoshka2d import Matryoshka2dLoss  # ST's, on embedkit's layer-L embedding

        m = cfg["matryoshka2d"]
        return Matryoshka2dLoss(model, loss, m["dims"], matryoshka_weights=m["weights"],
                                n_layers_per_step=m["n_layers_per_step"], n_dims_per_step=m["n_dims_per_step"],
                                last_layer_weight=m["last_layer_weight"], prior_layers_weight=m["prior_layers_weight"],
                                kl_div_weight=m["kl_div_weight"], kl_temperature=m["kl_temperature"])
    if cfg.get("starbucks"):
        from embedkit.training.losses.starbucks import StarbucksLoss

        m = cfg["starbucks"]
        return StarbucksLoss(model, loss, m["ladder"], last_layer_weight=m["last_layer_weight"],
                             kl_div_weight=m["kl_div_weight"], kl_temperature=m["kl_temperature"], kl=m["kl"],
                             score_temperature=m["score_temperature"], distil_weight=m["distil_weight"],
                             anchor_weight=m["anchor_weight"])
    return loss


# --- built-in samplers --------------------------------------------------------------------------


@register_sampler("random")
def _random(texts, model, config, *, show_progress=False) -> SamplerPlan:
    return SamplerPlan("batch_sampler")


@register_sampler("no_duplicates")
def _no_duplicates(texts, model, config, *, show_progress=False) -> SamplerPlan:
    return SamplerPlan("no_duplicates")


@register_sampler("gsimclr")
def _gsimclr(texts, model, config, *, show_progress=False) -> SamplerPlan:
    import numpy as np

    from embedkit.training import distributed
    from embedkit.training.samplers import gsimclr_batch_sampler, pseudo_labels

    s, t = config["sampler"], config["training"]
    k = t["batch_size"] * distributed.world_size()  # the global batch is what must be cluster-distinct
    if distributed.rank() != 0:  # the sampler takes rank 0's labels; no rank but 0 runs k-means
        labels = np.zeros(len(texts), np.int64)
    else:
        logger.info("G-SimCLR: k-means (K=%d) on %s embeddings", k, s["embed"])
        labels = pseudo_labels(texts, k, method=s["embed"], model=model, seed=t["seed"], show_progress=show_progress)
    factory = gsimclr_batch_sampler(labels, shuffle_batches=s["shuffle_batches"])
    return SamplerPlan(factory, lambda: dict(factory.sampler.stats) if factory.sampler else None)
