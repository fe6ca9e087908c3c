"""``mrl:DIM``: Matryoshka truncation to the first DIM dimensions, then L2 renormalisation."""

from __future__ import annotations

import numpy as np

from embedkit.compression.base import Transform, l2_normalize
from embedkit.errors import SpecError
from embedkit.validation import check_positive_int

__all__ = ["MatryoshkaTruncation"]


class MatryoshkaTruncation(Transform):
    """Keep the first ``dim`` coordinates and renormalise to unit length.

    Meaningful for models trained with a Matryoshka loss (Kusupati et al., NeurIPS 2022,
    "Matryoshka Representation Learning"); for other models it is a cheap baseline.

    Args:
        dim: number of leading dimensions to keep (at most the input dimension).

    Example:
        >>> import numpy as np
        >>> t = MatryoshkaTruncation(2).fit(np.eye(4, dtype="float32"))
        >>> t.transform(np.array([[3.0, 4.0, 1.0, 1.0]])).astype(float).round(2).tolist()
        [[0.6, 0.8]]
    """

    name = "mrl"

    def __init__(self, dim: int):
        self.dim = dim

    @property
    def spec(self) -> str:
        return f"mrl:{self.dim}"

    def _validate(self, n: int, d: int) -> None:
        dim = check_positive_int(self.dim, "mrl dimension")
        if dim > d:
            raise SpecError(f"mrl:{dim} needs embeddings of at least {dim} dimensions, got {d}")

    def transform(self, X) -> np.ndarray:
        X = self._check_input(X)
        return l2_normalize(X[:, : int(self.dim)])

    def dim_out(self) -> int:
        return int(self.dim)
