"""UnifiedEmbedding: all features multiplexed into one shared, hashed table (feature multiplexing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from embedkit.errors import EmbedkitError

from ._hash import bucket, derive_salt
from .base import CategoricalTables, _per_feature


class UnifiedEmbedding(CategoricalTables):
    """One shared table of ``num_buckets`` rows x ``chunk_dim`` for every feature.

    Feature ``i`` gets ``k_i = num_chunks[i]`` chunks; chunk ``c`` has its own hash
    ``h_{i,c}(v) = Hash(v, salt=(seed, i, c)) mod B`` and the feature's embedding is the
    concatenation of its ``k_i`` looked-up rows (dimension ``k_i * chunk_dim``). Features share
    rows, so the table's capacity goes where the values are; collisions between (and within)
    features are random and, with ``k_i > 1``, two values rarely collide in every chunk.
    With ``num_tables > 1`` the ``B`` rows are split into that many backend tables and the
    chunks are assigned to them round-robin in (feature, chunk) order, as in the reference
    TensorFlow Recommenders layer. The salt uses the feature *name*, so reordering features
    does not change any row.

    Args:
        features: feature names.
        num_buckets: total rows ``B`` over all backend tables.
        chunk_dim: width ``d'`` of one row.
        num_chunks: ``k_i`` for every feature, or a mapping feature -> chunks.
        num_tables: number of backend tables the ``B`` rows are split into.
        seed: selects the hash functions.
        pooling: ``"sum"`` or ``"mean"`` for multi-valued features.
        padding_value: id that marks padding in 2-D (batch, length) inputs.
        init_std: standard deviation of the normal initialisation.

    Example:
        >>> import torch
        >>> ue = UnifiedEmbedding(["user", "item", "genre"], num_buckets=500, chunk_dim=8,
        ...                       num_chunks={"user": 2, "item": 2, "genre": 1})
        >>> out = ue({"user": torch.tensor([1, 2]), "genre": torch.tensor([[3, 5], [7, -1]])})
        >>> out["user"].shape, out["genre"].shape, ue.num_parameters()
        (torch.Size([2, 16]), torch.Size([2, 8]), 4000)

    References:
        Coleman, Kang, Fahrbach, Wang, Hong, Mehta & Cheng, "Unified Embedding: Battle-Tested
        Feature Representations for Web-Scale ML Systems", NeurIPS 2023.
    """

    def __init__(
        self,
        features: Sequence[str],
        num_buckets: int,
        chunk_dim: int = 8,
        num_chunks: int | Mapping[str, int] = 2,
        num_tables: int = 1,
        seed: int = 0,
        pooling: str = "mean",
        padding_value: int = -1,
        init_std: float = 0.05,
    ) -> None:
        super().__init__(features, pooling=pooling, padding_value=padding_value)
        self._chunks = _per_feature(num_chunks, self.feature_names, "num_chunks")
        for name, v in (("num_buckets", num_buckets), ("chunk_dim", chunk_dim), ("num_tables", num_tables)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise EmbedkitError(f"{name} must be a positive int, got {v!r}")
        if num_tables > num_buckets:
            raise EmbedkitError(f"num_tables ({num_tables}) cannot exceed num_buckets ({num_buckets})")
        self.num_buckets, self.chunk_dim, self.num_tables = num_buckets, chunk_dim, num_tables
        self.seed = int(seed)
        self.init_std = float(init_std)
        sizes = [num_buckets // num_tables + (j < num_buckets % num_tables) for j in range(num_tables)]
        self.tables = nn.ModuleList([nn.Embedding(s, chunk_dim) for s in sizes])
        for t in self.tables:
            nn.init.normal_(t.weight, std=self.init_std)
        # (table index, salt) of every chunk, round-robin over (feature, chunk) pairs
        self._plan: dict[str, list[tuple[int, int]]] = {}
        g = 0
        for f in self.feature_names:
            self._plan[f] = []
            for c in range(self._chunks[f]):
                self._plan[f].append((g % num_tables, derive_salt(self.seed, f, c)))
                g += 1

    @property
    def embedding_dims(self) -> dict[str, int]:
        return {f: k * self.chunk_dim for f, k in self._chunks.items()}

    def chunk_tables(self, feature: str) -> list[int]:
        """Backend table of each chunk of ``feature``."""
        self._check_name(feature)
        return [j for j, _ in self._plan[feature]]

    def rows(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        """``(n, k)``: row of each value for each chunk, inside that chunk's backend table."""
        self._check_name(feature)
        cols = [bucket(values, salt, self.tables[j].num_embeddings) for j, salt in self._plan[feature]]
        return torch.stack(cols, dim=1)

    def embed_values(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        rows = self.rows(feature, values)
        parts = [self.tables[j](rows[:, c]) for c, (j, _) in enumerate(self._plan[feature])]
        return torch.cat(parts, dim=1)

    def get_config(self) -> dict[str, Any]:
        return {
            "features": self.feature_names,
            "num_buckets": self.num_buckets,
            "chunk_dim": self.chunk_dim,
            "num_chunks": self._chunks,
            "num_tables": self.num_tables,
            "seed": self.seed,
            "pooling": self.pooling,
            "padding_value": self.padding_value,
            "init_std": self.init_std,
        }
