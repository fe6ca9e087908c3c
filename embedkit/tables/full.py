"""FullTables: one uncompressed ``nn.Embedding`` per feature (the 100% reference)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._vocab import Vocabularies
from .base import CategoricalTables, _per_feature


class FullTables(CategoricalTables):
    """One row per known value of each feature, plus one shared out-of-vocabulary row (row 0).

    Values are looked up in a sorted vocabulary (``torch.searchsorted``); values absent from the
    vocabulary all map to the feature's row 0. Ids must be non-negative (hash strings with
    :func:`hash_strings`, which gives non-negative ids).

    Args:
        vocabularies: feature name -> the known ids (any iterable of ints, a LongTensor, or strings).
        embedding_dim: dimension of every feature, or a mapping feature -> dimension.
        pooling: ``"sum"`` or ``"mean"`` for multi-valued features.
        padding_value: id that marks padding in 2-D (batch, length) inputs.
        init_std: standard deviation of the normal initialisation.

    Example:
        >>> import torch
        >>> tables = FullTables({"user": [10, 11, 12], "genre": range(19)}, embedding_dim=8)
        >>> out = tables({"user": torch.tensor([10, 99]), "genre": torch.tensor([[1, 4], [2, -1]])})
        >>> out["user"].shape, out["genre"].shape, tables.num_parameters()
        (torch.Size([2, 8]), torch.Size([2, 8]), 192)

    References:
        The uncompressed baseline of Coleman et al., "Unified Embedding: Battle-Tested Feature
        Representations for Web-Scale ML Systems", NeurIPS 2023.
    """

    requires_non_negative = True

    def __init__(
        self,
        vocabularies: Mapping[str, Any],
        embedding_dim: int | Mapping[str, int] = 16,
        pooling: str = "mean",
        padding_value: int = -1,
        init_std: float = 0.05,
    ) -> None:
        super().__init__(list(vocabularies), pooling=pooling, padding_value=padding_value)
        self._dims = _per_feature(embedding_dim, self.feature_names, "embedding_dim")
        self.init_std = float(init_std)
        self.vocab = Vocabularies(vocabularies, self.feature_names)
        self.tables = nn.ModuleDict(
            {f: nn.Embedding(self.vocab.size(f) + 1, self._dims[f]) for f in self.feature_names}
        )
        for t in self.tables.values():
            nn.init.normal_(t.weight, std=self.init_std)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], **kwargs: Any) -> FullTables:
        """Build with the vocabulary of every value seen in ``data`` (e.g. the training set)."""
        return cls(data, **kwargs)

    @property
    def embedding_dims(self) -> dict[str, int]:
        return dict(self._dims)

    def rows(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        """Row of each id in the feature's table (0 = out of vocabulary)."""
        self._check_name(feature)
        return self.vocab.index(feature, values)

    def embed_values(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        return self.tables[feature](self.vocab.index(feature, values))

    def get_config(self) -> dict[str, Any]:
        return {
            "features": self.feature_names,
            "embedding_dim": self._dims,
            "pooling": self.pooling,
            "padding_value": self.padding_value,
            "init_std": self.init_std,
        }

    @classmethod
    def _from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> FullTables:
        config = dict(config)
        features = config.pop("features")
        vocab = {f: tensors[f"vocab.{f}"] for f in features}
        return cls(vocab, **config)
