"""StarbucksLoss: 2D Matryoshka training on a fixed diagonal ladder of (layers, dims) sizes.

Zhuang, Wang, Koopman, Zuccon. "Starbucks: Improved Training for 2D Matryoshka Embeddings."
arXiv 2410.13230 (reference code: ``ielab/Starbucks``, ``sts/starbucks_loss.py``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedkit.errors import RecipeError

__all__ = ["KL_VARIANTS", "StarbucksLoss", "default_ladder", "check_ladder", "trained_sizes"]

logger = logging.getLogger(__name__)

# The paper's ladder for 12-layer, 768-d models (BERT-base) and the for 6-layer, 384-d ones (MiniLM-L6).
_KNOWN_LADDERS = {
    (12, 768): ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)),
    (6, 384): ((1, 32), (2, 64), (3, 128), (4, 192), (5, 256), (6, 384)),
}


def default_ladder(depth: int, width: int) -> list[tuple[int, int]]:
    """The diagonal (layers, dims) ladder for a model of ``depth`` layers and ``width`` dims.

    The paper's ladder for 12 x 768 models, (1,32)...(6,384) for 6 x 384 models; otherwise up to six
    evenly spaced layers paired with the same fractions of the width as the 6 x 384 ladder.
    """
    if (depth, width) in _KNOWN_LADDERS:
        return [tuple(p) for p in _KNOWN_LADDERS[(depth, width)]]
    k = min(6, depth)
    fractions = (1 / 12, 1 / 6, 1 / 3, 1 / 2, 2 / 3, 1.0)[-k:]
    out = []
    for i, f in enumerate(fractions, start=1):
        layer = max(1, round(depth * i / k))
        dim = max(1, int(round(width * f)))
        if not out or (layer > out[-1][0] and dim > out[-1][1]):
            out.append((layer, dim))
    out[-1] = (depth, width)
    return out


def check_ladder(ladder, depth: int, width: int, *, where: str = "ladder") -> list[tuple[int, int]]:
    """Validate a ladder: pairs of whole numbers, layers and dims strictly increasing, within the model."""
    try:
        pairs = [(int(a), int(b)) for a, b in ladder]
        ok = all(float(a) == int(a) and float(b) == int(b) for a, b in ladder)
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: must be a list of [layers, dims] pairs, got {ladder!r}") from None
    if not pairs or not ok:
        raise RecipeError(f"{where}: must be a non-empty list of [layers, dims] whole-number pairs, got {ladder!r}")
    for i, (layer, d) in enumerate(pairs):
        if not 1 <= layer <= depth:
            raise RecipeError(f"{where}[{i}]: layer {layer} is beyond the model's depth {depth} (use 1..{depth})")
        if not 1 <= d <= width:
            raise RecipeError(f"{where}[{i}]: dim {d} is beyond the model's width {width} (use 1..{width})")
        if i and (layer <= pairs[i - 1][0] or d <= pairs[i - 1][1]):
            raise RecipeError(f"{where}: sizes must increase in both layers and dims; "
                              f"{list(pairs[i - 1])} is followed by {[layer, d]}")
    return pairs


def trained_sizes(loss_cfg: dict, depth: int, width: int) -> dict | None:
    """The (layers, dims) sizes a recipe's validated ``loss`` section trains, or None without a wrapper.

    Starbucks: its ladder; 2DMSE (``matryoshka2d``): every layer with every listed dim (it samples
    over that grid); Matryoshka: the listed dims at full depth. The full size always counts.
    Returns ``{"method": name, "sizes": [(layers, dims), ...]}`` sorted.
    """
    if loss_cfg.get("starbucks") is not None:
        ladder = loss_cfg["starbucks"].get("ladder")
        method, sizes = "starbucks", set(check_ladder(default_ladder(depth, width) if ladder is None else ladder,
                                                      depth, width))
    elif loss_cfg.get("matryoshka2d") is not None:
        method = "matryoshka2d"
        sizes = {(layer, int(d)) for layer in range(1, depth + 1) for d in loss_cfg["matryoshka2d"]["dims"]}
    elif loss_cfg.get("matryoshka") is not None:
        method, sizes = "matryoshka", {(depth, int(d)) for d in loss_cfg["matryoshka"]["dims"]}
    else:
        return None
    sizes.add((depth, width))
    return {"method": method, "sizes": sorted(sizes)}


_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _frozen_start(model):
    """A frozen (eval, no-gradient) copy of ``model`` as it is now, shared by the StarbucksLosses built on it
    while its weights do not change (a recipe's main and ``data.extra`` losses are built together, before
    training); a copy is taken again once the weights have changed in place or been replaced."""
    key = tuple((p.data_ptr(), p._version) for p in model.parameters())
    cached = _FROZEN.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    import copy

    start = copy.deepcopy(model).eval()
    for p in start.parameters():
        p.requires_grad_(False)
    _FROZEN[model] = (key, start)
    return start


def _shrink(x: Tensor, d: int) -> Tensor:
    return F.normalize(x[..., :d], p=2, dim=-1)


#: the KL variants: the reference's STS one (over embedding coordinates) and its retrieval one (over in-batch scores)
KL_VARIANTS = ("dims", "scores")


def _score_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher / t) || softmax(student / t)) row-wise, ``batchmean``; the teacher carries no gradient."""
    return F.kl_div(F.log_softmax(student / temperature, dim=-1), F.softmax(teacher.detach() / temperature, dim=-1),
                    reduction="batchmean")


class StarbucksLoss(nn.Module):
    """Train every (layers, dims) size of a fixed diagonal ladder at every step, from one forward pass.

    For each text column, the model runs ONCE with all hidden states returned, and the layer-L
    sentence embedding (:mod:`embedkit.models.submodel`: the model's pooling applied to layer L's
    token states, with a pre-norm backbone's final norm, exactly what the exported L-layer
    sub-model computes) is taken for every ladder layer. Then, as the reference computes it:

    * the inner loss on the full model's embedding (all layers, all dims) times ``last_layer_weight``;
    * for every other ladder size (l, d): the inner loss on the layer-l embedding cut to its first d
      dims and renormalised (weight 1, as in the reference), plus a KL term to the full size:

      - ``kl="dims"`` (the reference's STS variant, ``sts/starbucks_loss.py``):
        ``kl_temperature * kl_div_weight * KL(softmax(full[:, :d]) || softmax(sub_l[:, :d]))`` over
        embedding coordinates, ``batchmean``, all columns stacked. The embeddings are the pooled
        ones *before* any trailing Normalize module, as in the reference (whose models have none):
        on unit vectors the softmax over 32-384 coordinates is nearly uniform and the term ~35x weaker.
      - ``kl="scores"`` (the reference's retrieval variant, ``retrieval/modeling.py``):
        ``kl_div_weight * KL(softmax(S_full / t) || softmax(S_l,d / t))`` where ``S`` holds the
        cosine similarities of every anchor (first column) to every candidate of the batch (the
        other columns), ``t = score_temperature``, teacher detached.

    * ``distil_weight > 0`` (embedkit's addition, against regret at the full size): every size, the
      full one included, also gets ``distil_weight * KL(softmax(S_start / t) || softmax(S_l,d / t))``
      where ``S_start`` are the in-batch scores of a frozen copy of the model as it was when the loss
      was built (the starting model). It keeps the full size near where it started while the
      smaller sizes learn; it costs one extra no-gradient forward per column and a copy of the model.
    * ``anchor_weight > 0`` (embedkit's addition, the no-regret knob): the full size also gets
      ``anchor_weight * mean(1 - cos(e_full, e_start))``, the cosine distance of every text's full-size
      embedding to the frozen starting model's. The score KL above is invariant to shifting a row of
      scores, so it lets the absolute cosine levels that STS ranks across pairs drift; this term pins
      the full size's output itself, while the lower layers and the smaller sizes still learn (the
      upper layers compensate). Same frozen copy and extra forward as ``distil_weight``.

    Deviations: the reference passes the full-size embeddings to the STS KL with ``.clone()``, so the
    teacher receives gradients; here it is detached by default (``detach_teacher=True``), as
    sentence-transformers' AdaptiveLayerLoss does since huggingface/sentence-transformers#3880 and as
    the reference's retrieval variant does. The retrieval variant scores by cosine similarity (the
    inner losses' similarity) where the reference takes dot products of the cut, un-renormalised
    vectors. The inner loss must offer ``compute_loss_from_embeddings`` (MultipleNegativesRankingLoss,
    CoSENTLoss, ... do); the reference's sampling of sizes (``n_selections_per_step``) is not offered,
    since its best results use all sizes every step.

    Works under DistributedDataParallel (sentence-transformers' trainer puts the wrapped model into
    ``loss.model``; the forward goes through the wrapper so gradients are synchronised).

    Args:
        model: a SentenceTransformer (Transformer, Pooling[, Normalize]).
        loss: the inner loss, e.g. ``MultipleNegativesRankingLoss(model)`` or ``CoSENTLoss(model)``.
        ladder: (layers, dims) pairs, strictly increasing in both; default :func:`default_ladder`.
        last_layer_weight: weight of the full-size loss.
        kl_div_weight: weight of the KL terms.
        kl_temperature: the reference's scale of the ``dims`` KL terms (0 turns them off).
        detach_teacher: stop gradients through the full-size embedding in the KL terms.
        kl: ``"dims"`` or ``"scores"`` (see above).
        score_temperature: ``t`` of the score distributions (``kl="scores"`` and distillation); None
            takes the inner loss's own (``1 / scale``, 0.05 for MultipleNegativesRankingLoss), else 0.05.
        distil_weight: weight of the distillation of every size from the frozen starting model (0: off).
        anchor_weight: weight of the full-size embedding anchor to the frozen starting model (0: off).

    Example:
        .. code-block:: python

            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
            loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model))   # (1,32) ... (6,384)

    References:
        Zhuang et al. 2024, arXiv 2410.13230; https://github.com/ielab/Starbucks
    """

    def __init__(self, model, loss: nn.Module, ladder: Sequence[Sequence[int]] | None = None, *,
                 last_layer_weight: float = 1.0, kl_div_weight: float = 1.0, kl_temperature: float = 0.3,
                 detach_teacher: bool = True, kl: str = "dims", score_temperature: float | None = None,
                 distil_weight: float = 0.0, anchor_weight: float = 0.0) -> None:
        super().__init__()
        from embedkit.models.submodel import model_depth, model_width, unwrap_model

        self.model = model
        self.loss = loss
        depth, width = model_depth(model), model_width(model)
        self.ladder = check_ladder(default_ladder(depth, width) if ladder is None else ladder, depth, width)
        self.depth, self.width = depth, width
        self.last_layer_weight = float(last_layer_weight)
        self.kl_div_weight = float(kl_div_weight)
        self.kl_temperature = float(kl_temperature)
        self.detach_teacher = bool(detach_teacher)
        if kl not in KL_VARIANTS:
            raise RecipeError(f"kl={kl!r}: must be one of {', '.join(map(repr, KL_VARIANTS))}")
        self.kl = kl
        if score_temperature is None:
            scale = getattr(loss, "scale", None)
            score_temperature = 1.0 / float(scale) if isinstance(scale, (int, float)) and scale > 0 else 0.05
        self.score_temperature = float(score_temperature)
        self.distil_weight = float(distil_weight)
        self.anchor_weight = float(anchor_weight)
        if self.distil_weight < 0 or self.anchor_weight < 0:
            raise RecipeError(f"distil_weight={distil_weight!r}, anchor_weight={anchor_weight!r}: must be >= 0")
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise RecipeError(f"loss {type(loss).__name__}: StarbucksLoss needs an inner loss with "
                              "compute_loss_from_embeddings (e.g. MultipleNegativesRankingLoss, CoSENTLoss)")
        # the frozen starting model: kept out of the module tree (no parameters, no state dict, not
        # replaced by the trainer's DDP wrapper), moved to the batch's device on first use
        needs_start = self.distil_weight > 0 or self.anchor_weight > 0
        self.__dict__["_start"] = _frozen_start(unwrap_model(model)) if needs_start else None
        #: the last step's terms (floats, for logging and tests): inner, kl, distil, anchor
        self.last_terms: dict[str, float] = {}

    def layer_embeddings(self, features: dict[str, Tensor], layers: Iterable[int], *,
                         normalize: bool = True) -> dict[int, Tensor]:
        """The layer-L sentence embeddings of the given layers, from one forward (see the class docs);
        ``normalize=False``: before any trailing Normalize module."""
        from embedkit.models.submodel import layer_sentence_embeddings

        return layer_sentence_embeddings(self.model, features, layers, normalize=normalize)

    def _scores(self, columns: list[Tensor], dim: int) -> Tensor:
        """Cosine similarities of the anchors (column 0) to every candidate of the batch (the other columns)."""
        from embedkit.training.distributed import all_gather

        if len(columns) < 2:
            raise RecipeError("StarbucksLoss: kl: scores and distil_weight need at least two text columns "
                              "(anchor and candidates), e.g. data.format pairs, beir or scored_pairs")
        cands = torch.cat([_shrink(c, dim) for c in columns[1:]], dim=0)
        if getattr(self.loss, "gather_across_devices", False):
            cands = all_gather(cands)
        return _shrink(columns[0], dim) @ cands.T

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        from embedkit.models.submodel import unwrap_model

        sentence_features = list(sentence_features)
        layers = sorted({layer for layer, _ in self.ladder} | {self.depth})
        raw = [self.layer_embeddings(f, layers, normalize=False) for f in sentence_features]
        normalizes = type(unwrap_model(self.model)[-1]).__name__ == "Normalize"
        full = [col[self.depth] for col in raw]
        full_out = [F.normalize(e, p=2, dim=-1) for e in full] if normalizes else full  # what the model outputs
        inner = self.last_layer_weight * self.loss.compute_loss_from_embeddings(full_out, labels)
        kl_total = inner.new_zeros(())
        distil_total = inner.new_zeros(())
        teacher = torch.cat(full, dim=0)
        if self.detach_teacher:
            teacher = teacher.detach()
        if self.kl == "scores" and self.kl_div_weight > 0:
            full_scores = self._scores(full, self.width).detach()
        start_scores = None
        anchor = inner.new_zeros(())
        if self.distil_weight > 0 or self.anchor_weight > 0:
            start = self._start_embeddings(sentence_features)
            if self.distil_weight > 0:
                start_scores = self._scores(start, self.width)
                distil_total = distil_total + _score_kl(self._scores(full, self.width), start_scores,
                                                        self.score_temperature)
            if self.anchor_weight > 0:  # cosine distance of each full-size embedding to where it started
                anchor = (1 - F.cosine_similarity(torch.cat(full, dim=0), torch.cat(start, dim=0), dim=-1)).mean()
        for layer, dim in self.ladder:
            if (layer, dim) == (self.depth, self.width):
                continue
            subs = [col[layer] for col in raw]
            inner = inner + self.loss.compute_loss_from_embeddings([_shrink(e, dim) for e in subs], labels)
            if self.kl == "dims" and self.kl_temperature > 0 and self.kl_div_weight > 0:
                student = torch.cat(subs, dim=0)
                kl = F.kl_div(F.log_softmax(student[:, :dim], dim=-1), F.softmax(teacher[:, :dim], dim=-1),
                              reduction="batchmean")
                kl_total = kl_total + kl * self.kl_temperature * self.kl_div_weight
            sub_scores = None
            if self.kl == "scores" and self.kl_div_weight > 0:
                sub_scores = self._scores(subs, dim)
                kl_total = kl_total + self.kl_div_weight * _score_kl(sub_scores, full_scores, self.score_temperature)
            if start_scores is not None:
                sub_scores = self._scores(subs, dim) if sub_scores is None else sub_scores
                distil_total = distil_total + _score_kl(sub_scores, start_scores, self.score_temperature)
        self.last_terms = {"inner": float(inner.detach()), "kl": float(kl_total.detach()),
                           "distil": float(self.distil_weight * distil_total.detach()),
                           "anchor": float(self.anchor_weight * anchor.detach())}
        return inner + kl_total + self.distil_weight * distil_total + self.anchor_weight * anchor

    @torch.no_grad()
    def _start_embeddings(self, sentence_features: list[dict[str, Tensor]]) -> list[Tensor]:
        """The frozen starting model's full-size embeddings, one tensor per text column."""
        start = self.__dict__["_start"]
        device = next(v.device for v in sentence_features[0].values() if isinstance(v, Tensor))
        if next(start.parameters()).device != device:
            start.to(device)
        return [start(dict(f))["sentence_embedding"] for f in sentence_features]

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "ladder": [list(p) for p in self.ladder],
                "last_layer_weight": self.last_layer_weight, "kl_div_weight": self.kl_div_weight,
                "kl_temperature": self.kl_temperature, "detach_teacher": self.detach_teacher, "kl": self.kl,
                "score_temperature": self.score_temperature, "distil_weight": self.distil_weight,
                "anchor_weight": self.anchor_weight}

    @property
    def citation(self) -> str:
        return """@article{zhuang2024starbucks,
  title={Starbucks: Improved Training for 2D Matryoshka Embeddings},
  author={Zhuang, Shengyao and Wang, Shuai and Koopman, Bevan and Zuccon, Guido},
  journal={arXiv preprint arXiv:2410.13230},
  year={2024}
}"""
