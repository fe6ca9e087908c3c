"""QRTrick: compositional embeddings from the quotient and remainder of a value's index."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from embedkit.errors import EmbedkitError

from ._vocab import Vocabularies
from .base import CategoricalTables, _per_feature

OPERATIONS = ("mult", "add", "concat")


def qr_shape(vocab_rows: int, num_remainders: int) -> tuple[int, int]:
    """(remainder rows, quotient rows) of a feature with ``vocab_rows`` indices (OOV included)."""
    m = min(int(num_remainders), vocab_rows)
    return m, math.ceil(vocab_rows / m)


def qr_parameters(vocab_rows: int, num_remainders: int, embedding_dim: int, operation: str = "mult") -> int:
    """Trainable parameters of one QR-compressed feature (both tables; concat halves each width)."""
    m, q = qr_shape(vocab_rows, num_remainders)
    if q == 1:  # nothing to compress: a plain table
        return vocab_rows * embedding_dim
    if operation == "concat":
        return m * (embedding_dim // 2) + q * (embedding_dim - embedding_dim // 2)
    return (m + q) * embedding_dim


class QRTrick(CategoricalTables):
    """Each feature's index ``i`` (vocabulary position, 0 = out of vocabulary) is embedded as
    ``T1[i mod m] * T2[i div m]`` (``operation="mult"``; ``"add"`` sums, ``"concat"`` joins two
    half-width vectors). Distinct indices get distinct (remainder, quotient) pairs, so unlike
    hashing no two known values share their whole representation. A feature with
    ``m >= vocabulary size + 1`` keeps a single full table.

    The remainder table is initialised ``N(0, init_std)``; for ``"mult"`` the quotient table is
    initialised ``N(1, init_std)`` so products start at the scale of a plain table.

    Args:
        vocabularies: feature name -> known ids (ints >= 0, a LongTensor, or strings).
        num_remainders: ``m`` (remainder-table rows) for every feature or per feature.
        embedding_dim: dimension of every feature, or a mapping feature -> dimension.
        operation: ``"mult"`` (default, as in the paper), ``"add"`` or ``"concat"``.
        pooling: ``"sum"`` or ``"mean"`` for multi-valued features.
        padding_value: id that marks padding in 2-D (batch, length) inputs.
        init_std: standard deviation of the normal initialisation.

    Example:
        >>> import torch
        >>> tables = QRTrick({"item": range(1682)}, num_remainders=42, embedding_dim=8)
        >>> tables({"item": torch.tensor([0, 41, 1681])})["item"].shape, tables.num_parameters()
        (torch.Size([3, 8]), 664)

    References:
        Shi, Mudigere, Naumov & Yang, "Compositional Embeddings Using Complementary Partitions for
        Memory-Efficient Recommendation Systems", KDD 2020.
    """

    requires_non_negative = True

    def __init__(
        self,
        vocabularies: Mapping[str, Any],
        num_remainders: int | Mapping[str, int],
        embedding_dim: int | Mapping[str, int] = 16,
        operation: str = "mult",
        pooling: str = "mean",
        padding_value: int = -1,
        init_std: float = 0.05,
    ) -> None:
        super().__init__(list(vocabularies), pooling=pooling, padding_value=padding_value)
        if operation not in OPERATIONS:
            raise EmbedkitError(f"operation must be one of {OPERATIONS}, got {operation!r}")
        self.operation = operation
        self._m = _per_feature(num_remainders, self.feature_names, "num_remainders")
        self._dims = _per_feature(embedding_dim, self.feature_names, "embedding_dim")
        if operation == "concat" and any(d < 2 for d in self._dims.values()):
            raise EmbedkitError("operation='concat' needs embedding_dim >= 2")
        self.init_std = float(init_std)
        self.vocab = Vocabularies(vocabularies, self.feature_names)
        self.remainder = nn.ModuleDict()
        self.quotient = nn.ModuleDict()
        for f in self.feature_names:
            d = self._dims[f]
            m, q = qr_shape(self.vocab.size(f) + 1, self._m[f])
            if q == 1:
                self.remainder[f] = nn.Embedding(m, d)
                nn.init.normal_(self.remainder[f].weight, std=self.init_std)
                continue
            d1, d2 = (d // 2, d - d // 2) if operation == "concat" else (d, d)
            self.remainder[f] = nn.Embedding(m, d1)
            self.quotient[f] = nn.Embedding(q, d2)
            std = self.init_std / math.sqrt(2) if operation == "add" else self.init_std
            nn.init.normal_(self.remainder[f].weight, std=std)
            nn.init.normal_(self.quotient[f].weight, mean=1.0 if operation == "mult" else 0.0, std=std)

    @property
    def embedding_dims(self) -> dict[str, int]:
        return dict(self._dims)

    def rows(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        """``(n, 2)`` (remainder row, quotient row) of each id; quotient is 0 for uncompressed features."""
        self._check_name(feature)
        i = self.vocab.index(feature, values)
        m = self.remainder[feature].num_embeddings
        if feature not in self.quotient:
            return torch.stack([i, torch.zeros_like(i)], dim=1)
        return torch.stack([i % m, i // m], dim=1)

    def embed_values(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        r = self.rows(feature, values)
        a = self.remainder[feature](r[:, 0])
        if feature not in self.quotient:
            return a
        b = self.quotient[feature](r[:, 1])
        if self.operation == "mult":
            return a * b
        if self.operation == "add":
            return a + b
        return torch.cat([a, b], dim=1)

    def get_config(self) -> dict[str, Any]:
        return {
            "features": self.feature_names,
            "num_remainders": self._m,
            "embedding_dim": self._dims,
            "operation": self.operation,
            "pooling": self.pooling,
            "padding_value": self.padding_value,
            "init_std": self.init_std,
        }

    @classmethod
    def _from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> QRTrick:
        config = dict(config)
        features = config.pop("features")
        return cls({f: tensors[f"vocab.{f}"] for f in features}, **config)
