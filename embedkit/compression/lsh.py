"""``lsh:BITS``: sign random projections (Charikar 2002), seeded Gaussian hyperplanes.

Each bit is ``x . w_j > 0`` for a fixed Gaussian direction ``w_j``; the Hamming distance between two
codes estimates the angle between the vectors (P[bit differs] = angle / pi). Unlike ``binary`` the
number of bits is free (more or fewer than the dimension), and nothing is learned from the data.
"""

from __future__ import annotations

import numpy as np

from embedkit.compression.binary import BinaryQuantizer
from embedkit.errors import EmbedkitError


class LSHQuantizer(BinaryQuantizer):
    """Random-hyperplane LSH with ``nbits`` bits per vector (``ceil(nbits/8)`` bytes).

    Args:
        nbits: number of hyperplanes (bits per code).
        seed: seed of the hyperplanes; the same seed gives the same codes.

    Example:
        >>> q = LSHQuantizer(64).fit(np.random.randn(100, 32))
        >>> q.encode(np.random.randn(5, 32)).shape
        (5, 8)
    """

    name = "lsh"

    def __init__(self, nbits: int, seed: int = 0):
        if int(nbits) < 1:
            raise EmbedkitError(f"lsh needs at least 1 bit, got {nbits}")
        self._nbits = int(nbits)
        self.seed = int(seed)

    @property
    def spec(self) -> str:
        return f"lsh:{self._nbits}"

    @property
    def nbits(self) -> int:
        return self._nbits

    def _fit(self, X: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        self.planes_ = rng.standard_normal((X.shape[1], self._nbits)).astype(np.float32)

    def bits(self, X: np.ndarray) -> np.ndarray:
        return X @ self.planes_ > 0

    def state(self):
        config, arrays = super().state()
        config["seed"] = self.seed
        if self.is_fitted:
            arrays["planes"] = self.planes_
        return config, arrays

    def _set_state(self, config, arrays):
        super()._set_state(config, arrays)
        self.seed = int(config.get("seed", 0))
        if "planes" in arrays:
            self.planes_ = np.asarray(arrays["planes"], dtype=np.float32)
