"""Contrastive loss over each anchor's own positive and hard negatives only (no in-batch negatives).

NV-Embed (Lee et al., ICLR 2025, arXiv 2405.17428) trains its second stage on non-retrieval data
(classification, clustering, STS as pairs) with in-batch negatives turned off: another example of the
batch may share the anchor's class, so using it as a negative teaches the wrong thing. Each anchor
is scored only against its own positive and its own listed negatives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OwnNegativesLoss"]


class OwnNegativesLoss(nn.Module):
    """InfoNCE over ``[positive_i, negative_i1 .. negative_iN]`` for anchor i — nothing from other rows.

    Inputs: columns ``(anchor, positive, negative_1, ..., negative_N)`` with N >= 1.

    Args:
        model: a SentenceTransformer.
        scale: inverse temperature of the cosine similarities (20 = 1 / 0.05, sentence-transformers' MNRL default).

    Example:
        .. code-block:: python

            loss = OwnNegativesLoss(model)      # e.g. stage 2 of the NV-Embed recipe on classification pairs

    References:
        Lee et al. 2025 (NV-Embed), arXiv 2405.17428, section 3.3.
    """

    def __init__(self, model, scale: float = 20.0) -> None:
        super().__init__()
        self.model = model
        self.scale = float(scale)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        embeddings = [self.model(f)["sentence_embedding"] for f in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def logits(self, embeddings: list[Tensor]) -> Tensor:
        """``(batch, 1 + N)``: row i holds anchor i's scaled cosines with its positive and its N negatives."""
        if len(embeddings) < 3:
            raise ValueError("OwnNegativesLoss needs (anchor, positive, negative_1, ...) columns; got "
                             f"{len(embeddings)} column(s)")
        a = F.normalize(embeddings[0], dim=-1)
        cands = torch.stack([F.normalize(e, dim=-1) for e in embeddings[1:]], dim=1)  # (B, 1+N, d)
        return self.scale * torch.einsum("bd,bkd->bk", a, cands)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        z = self.logits(embeddings)
        return F.cross_entropy(z, torch.zeros(z.shape[0], dtype=torch.long, device=z.device))

    def get_config_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}
