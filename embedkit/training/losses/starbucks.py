"""StarbucksLoss: 2D Matryoshka training on a fixed diagonal ladder of (layers, dims) sizes.

Zhuang, Wang, Koopman, Zuccon. "Starbucks: Improved Training for 2D Matryoshka Embeddings."
arXiv 2410.13230 (reference code: ``ielab/Starbucks``, ``sts/starbucks_loss.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from embedkit.errors import RecipeError

__all__ = ["StarbucksLoss", "default_ladder", "check_ladder"]

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


def _shrink(x: Tensor, d: int) -> Tensor:
    return F.normalize(x[..., :d], p=2, dim=-1)


class StarbucksLoss(nn.Module):
    """Train every (layers, dims) size of a fixed diagonal ladder at every step, from one forward pass.

    For each text column, the transformer runs ONCE with all hidden states returned; the model's own
    pooling (and normalisation) is applied to the hidden state of every ladder layer. Then, as the
    reference computes it:

    * the inner loss on the full model's embedding (all layers, all dims) times ``last_layer_weight``;
    * for every other ladder size (l, d): the inner loss on the layer-l embedding cut to its first d
      dims and renormalised (weight 1, as in the reference), plus ``kl_temperature * kl_div_weight *
      KL(softmax(full[:, :d]) || softmax(sub_l[:, :d]))`` over embedding dimensions, ``batchmean``,
      with all columns' embeddings stacked — the STS variant of the reference.

    Deviation: the reference passes the full-size embeddings to the KL term with ``.clone()``, so the
    teacher receives gradients from the KL; here the teacher is detached by default
    (``detach_teacher=True``), as sentence-transformers' AdaptiveLayerLoss does since its fix
    (huggingface/sentence-transformers#3880) and as the paper describes distillation from the full
    size. The inner loss must offer ``compute_loss_from_embeddings`` (sentence-transformers'
    MultipleNegativesRankingLoss, CoSENTLoss, ... do); the reference's sampling of sizes
    (``n_selections_per_step``) is not offered, since its best results use all sizes every step.

    Args:
        model: a SentenceTransformer (Transformer, Pooling[, Normalize]).
        loss: the inner loss, e.g. ``MultipleNegativesRankingLoss(model)`` or ``CoSENTLoss(model)``.
        ladder: (layers, dims) pairs, strictly increasing in both; default :func:`default_ladder`.
        last_layer_weight: weight of the full-size loss.
        kl_div_weight: weight of the KL terms.
        kl_temperature: the reference's scale of the KL terms (0 turns them off).
        detach_teacher: stop gradients through the full-size embedding in the KL terms.

    Example:
        .. code-block:: python

            from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
            loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model))   # (1,32) ... (6,384)

    References:
        Zhuang et al. 2024, arXiv 2410.13230; https://github.com/ielab/Starbucks
    """

    def __init__(self, model, loss: nn.Module, ladder: Sequence[Sequence[int]] | None = None, *,
                 last_layer_weight: float = 1.0, kl_div_weight: float = 1.0, kl_temperature: float = 0.3,
                 detach_teacher: bool = True) -> None:
        super().__init__()
        from embedkit.models.submodel import model_depth, model_width

        self.model = model
        self.loss = loss
        depth, width = model_depth(model), model_width(model)
        self.ladder = check_ladder(default_ladder(depth, width) if ladder is None else ladder, depth, width)
        self.depth, self.width = depth, width
        self.last_layer_weight = float(last_layer_weight)
        self.kl_div_weight = float(kl_div_weight)
        self.kl_temperature = float(kl_temperature)
        self.detach_teacher = bool(detach_teacher)
        if not hasattr(loss, "compute_loss_from_embeddings"):
            raise RecipeError(f"loss {type(loss).__name__}: StarbucksLoss needs an inner loss with "
                              "compute_loss_from_embeddings (e.g. MultipleNegativesRankingLoss, CoSENTLoss)")

    def layer_embeddings(self, features: dict[str, Tensor], layers: Iterable[int]) -> dict[int, Tensor]:
        """Pooled (and normalised, as the model does) embeddings of the given layers, from one forward."""
        from embedkit.models.submodel import layer_sentence_embeddings

        return layer_sentence_embeddings(self.model, features, layers)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        layers = sorted({layer for layer, _ in self.ladder} | {self.depth})
        per_column = [self.layer_embeddings(f, layers) for f in sentence_features]
        full = [col[self.depth] for col in per_column]
        loss = self.last_layer_weight * self.loss.compute_loss_from_embeddings(full, labels)
        teacher = torch.cat(full, dim=0)
        if self.detach_teacher:
            teacher = teacher.detach()
        for layer, dim in self.ladder:
            if (layer, dim) == (self.depth, self.width):
                continue
            subs = [col[layer] for col in per_column]
            loss = loss + self.loss.compute_loss_from_embeddings([_shrink(e, dim) for e in subs], labels)
            if self.kl_temperature > 0:
                student = torch.cat(subs, dim=0)
                kl = F.kl_div(F.log_softmax(student[:, :dim], dim=-1), F.softmax(teacher[:, :dim], dim=-1),
                              reduction="batchmean")
                loss = loss + kl * self.kl_temperature * self.kl_div_weight
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {"loss": type(self.loss).__name__, "ladder": [list(p) for p in self.ladder],
                "last_layer_weight": self.last_layer_weight, "kl_div_weight": self.kl_div_weight,
                "kl_temperature": self.kl_temperature, "detach_teacher": self.detach_teacher}

    @property
    def citation(self) -> str:
        return """@article{zhuang2024starbucks,
  title={Starbucks: Improved Training for 2D Matryoshka Embeddings},
  author={Zhuang, Shengyao and Wang, Shuai and Koopman, Bevan and Zuccon, Guido},
  journal={arXiv preprint arXiv:2410.13230},
  year={2024}
}"""
