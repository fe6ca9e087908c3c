"""HashingTrick: each feature hashes its values into its own table of ``m`` rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ._hash import bucket, derive_salt
from .base import CategoricalTables, _per_feature


class HashingTrick(CategoricalTables):
    """Per-feature table ``T_f`` of ``num_rows[f]`` rows; ``e_f(v) = T_f[h_f(v) mod m_f]``.

    ``h_f`` is the seeded SplitMix64 hash with salt ``(seed, f, 0)``, so the rows are the same in
    every process and differ between seeds. No vocabulary is needed: any int64 value (negative
    ids included) and unseen values map to some row; distinct values may collide.

    Args:
        features: feature names.
        num_rows: rows of every feature's table, or a mapping feature -> rows.
        embedding_dim: dimension of every feature, or a mapping feature -> dimension.
        seed: selects the hash functions.
        pooling: ``"sum"`` or ``"mean"`` for multi-valued features.
        padding_value: id that marks padding in 2-D (batch, length) inputs.
        init_std: standard deviation of the normal initialisation.

    Example:
        >>> import torch
        >>> tables = HashingTrick(["ip", "app"], num_rows={"ip": 1000, "app": 64}, embedding_dim=8, seed=1)
        >>> tables({"ip": torch.tensor([5348, -7])})["ip"].shape
        torch.Size([2, 8])
        >>> tables.num_parameters()
        8512

    References:
        Weinberger, Dasgupta, Langford, Smola & Attenberg, "Feature Hashing for Large Scale
        Multitask Learning", ICML 2009.
    """

    def __init__(
        self,
        features: Sequence[str],
        num_rows: int | Mapping[str, int],
        embedding_dim: int | Mapping[str, int] = 16,
        seed: int = 0,
        pooling: str = "mean",
        padding_value: int = -1,
        init_std: float = 0.05,
    ) -> None:
        super().__init__(features, pooling=pooling, padding_value=padding_value)
        self._rows = _per_feature(num_rows, self.feature_names, "num_rows")
        self._dims = _per_feature(embedding_dim, self.feature_names, "embedding_dim")
        self.seed = int(seed)
        self.init_std = float(init_std)
        self._salts = {f: derive_salt(self.seed, f, 0) for f in self.feature_names}
        self.tables = nn.ModuleDict({f: nn.Embedding(self._rows[f], self._dims[f]) for f in self.feature_names})
        for t in self.tables.values():
            nn.init.normal_(t.weight, std=self.init_std)

    @property
    def embedding_dims(self) -> dict[str, int]:
        return dict(self._dims)

    def rows(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        """Row of each value in the feature's table."""
        self._check_name(feature)
        return bucket(values, self._salts[feature], self._rows[feature])

    def embed_values(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        return self.tables[feature](self.rows(feature, values))

    def get_config(self) -> dict[str, Any]:
        return {
            "features": self.feature_names,
            "num_rows": self._rows,
            "embedding_dim": self._dims,
            "seed": self.seed,
            "pooling": self.pooling,
            "padding_value": self.padding_value,
            "init_std": self.init_std,
        }
