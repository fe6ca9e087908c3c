"""``mrl:DIM``: Matryoshka truncation to the first DIM dimensions, then L2 renormalisation."""

from __future__ import annotations

import numpy as np

from embedkit.compression.base import Transform, check_matrix, l2_normalize
from embedkit.errors import EmbedkitError


class MatryoshkaTruncation(Transform):
    """Keep the first ``dim`` coordinates and renormalise to unit length.

    Meaningful for models trained with a Matryoshka loss (Kusupati et al., NeurIPS 2022,
    "Matryoshka Representation Learning"); for other models it is a cheap baseline.

    Args:
        dim: number of leading dimensions to keep.

    Example:
        >>> t = MatryoshkaTruncation(2).fit(np.eye(4, dtype="float32"))
        >>> t.transform(np.array([[3.0, 4.0, 1.0, 1.0]])).round(2).tolist()
        [[0.6, 0.8]]
    """

    name = "mrl"

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise EmbedkitError(f"mrl dimension must be >= 1, got {dim}")
        self.dim = int(dim)

    @property
    def spec(self) -> str:
        return f"mrl:{self.dim}"

    def fit(self, X):
        X = check_matrix(X)
        if self.dim > X.shape[1]:
            raise EmbedkitError(f"mrl:{self.dim} needs embeddings of at least {self.dim} dimensions, got {X.shape[1]}")
        self.dim_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:
        X = self._check_input(X)
        return l2_normalize(X[:, : self.dim])

    def dim_out(self) -> int:
        return self.dim
