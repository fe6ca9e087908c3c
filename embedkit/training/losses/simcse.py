"""Unsupervised SimCSE (Gao, Yao, Chen, EMNLP 2021): dropout noise as the only augmentation.

Each sentence is encoded twice with dropout on; the two encodings are a positive pair and the other
sentences of the batch are negatives; cross-entropy over cosine similarities / temperature.

This is the same objective as sentence-transformers' ``MultipleNegativesRankingLoss`` on (s, s)
pairs with ``scale = 1 / temperature`` (its SimCSE recipe, which :mod:`bench.train_unsup` runs as
the anchor). The differences are practical: this loss takes a *single* text column (the second
view is a copy of the tokenised first one, so each sentence is tokenised once) and encodes both
views in one forward pass of 2N rows, as the SimCSE reference code does.

Under multi-process training (torchrun / DistributedDataParallel) the second views of every rank
are gathered (:func:`embedkit.training.distributed.all_gather`, gradient kept), so each sentence has
the whole global batch as negatives: 2 processes x batch B train exactly like 1 process x batch 2B.
``gather_across_devices=False`` keeps the per-rank negatives.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _embed_views(model, features_list: list[dict[str, Any]]) -> list[Tensor]:
    """Both views through the model, in one merged forward when the batches can be merged."""
    from sentence_transformers.base.losses.merged_forward import embed_columns

    return embed_columns(model, features_list, separate_first=False)


def info_nce(anchors: Tensor, positives: Tensor, temperature: float, extra_negatives: Tensor | None = None,
             offset: int = 0) -> Tensor:
    """One-directional InfoNCE: row i of ``anchors`` against [all ``positives`` | ``extra_negatives``].

    Similarity is cosine; the target of row i is column ``offset + i`` (``offset`` > 0 when
    ``positives`` are the gathered positives of all ranks and ``anchors`` this rank's rows).
    """
    a = F.normalize(anchors, dim=-1)
    logits = a @ F.normalize(positives, dim=-1).T
    if extra_negatives is not None and extra_negatives.shape[0] > 0:
        logits = torch.cat([logits, a @ F.normalize(extra_negatives.to(a.dtype), dim=-1).T], dim=1)
    labels = torch.arange(offset, offset + a.shape[0], device=a.device)
    return F.cross_entropy(logits / temperature, labels)


def gathered_info_nce(anchors: Tensor, positives: Tensor, temperature: float,
                      extra_negatives: Tensor | None = None, *, gather: bool = True) -> Tensor:
    """:func:`info_nce` with the positives of every rank as candidates (the identity in one process).

    The loss is scaled by ``n_local * world_size / n_global`` so that DistributedDataParallel's
    average over ranks equals the mean over the global batch even when ranks hold different numbers
    of rows (the factor is 1 for equal batches).
    """
    from embedkit.training import distributed

    if not gather or not distributed.is_distributed():
        return info_nce(anchors, positives, temperature, extra_negatives)
    all_pos, sizes = distributed.all_gather(positives, with_sizes=True)
    if len(sizes) == 1:
        return info_nce(anchors, positives, temperature, extra_negatives)
    r = distributed.rank()
    loss = info_nce(anchors, all_pos, temperature, extra_negatives, offset=sum(sizes[:r]))
    return loss * (sizes[r] * len(sizes) / sum(sizes))


class SimCSELoss(nn.Module):
    """Unsupervised SimCSE loss for the sentence-transformers trainer.

    Args:
        model: the SentenceTransformer being trained (dropout must be on, as it is in training mode).
        temperature: softmax temperature tau (0.05 in the paper).
        gather_across_devices: under multi-process training, use every rank's sentences as
            negatives (all-gather with the gradient kept; the default). No effect in one process.

    Inputs:
        +-----------------------------------+--------+
        | Texts                             | Labels |
        +===================================+========+
        | (sentence) or (sentence, sentence)| none   |
        +-----------------------------------+--------+

    Example:
        .. code-block:: python

            from datasets import Dataset
            from sentence_transformers import SentenceTransformerTrainer
            loss = SimCSELoss(model)
            trainer = SentenceTransformerTrainer(model=model, train_dataset=Dataset.from_dict({"text": sentences}),
                                                 loss=loss)
    """

    def __init__(self, model, temperature: float = 0.05, gather_across_devices: bool = True) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)
        self.gather_across_devices = bool(gather_across_devices)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        feats = list(sentence_features)
        if len(feats) == 1:
            feats = [feats[0], dict(feats[0])]
        z1, z2 = _embed_views(self.model, feats[:2])
        return gathered_info_nce(z1, z2, self.temperature, gather=self.gather_across_devices)

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "gather_across_devices": self.gather_across_devices}

    @property
    def citation(self) -> str:
        return """@inproceedings{gao2021simcse,
    title={{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},
    author={Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
    booktitle={EMNLP},
    year={2021}
}"""
