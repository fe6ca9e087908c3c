"""``lsh:NBITS``: sign random projections (Charikar 2002), seeded Gaussian hyperplanes.

Each bit is ``x . w_j > 0`` for a fixed Gaussian direction ``w_j``; the Hamming distance between two
codes estimates the angle between the vectors (P[bit differs] = angle / pi). Unlike ``binary`` the
number of bits is free (more or fewer than the dimension), and nothing is learned from the data.
It is capped at :data:`MAX_BITS_PER_DIM` bits per input dimension: a longer code is larger than the
float32 vector it compresses (and ``lsh:100000000`` would otherwise try to allocate hundreds of GiB).
"""

from __future__ import annotations

import numpy as np

from embedkit.compression.binary import BinaryQuantizer
from embedkit.errors import SpecError
from embedkit.validation import check_positive_int

__all__ = ["LSHQuantizer", "MAX_BITS_PER_DIM"]

#: at most this many bits per input dimension: the size of the float32 vector itself
MAX_BITS_PER_DIM = 32


class LSHQuantizer(BinaryQuantizer):
    """Random-hyperplane LSH with ``nbits`` bits per vector (``ceil(nbits/8)`` bytes).

    Args:
        nbits: number of hyperplanes (bits per code); at most 32 per input dimension.
        seed: seed of the hyperplanes; the same seed gives the same codes.

    Example:
        >>> import numpy as np
        >>> q = LSHQuantizer(64).fit(np.random.randn(100, 32))
        >>> q.encode(np.random.randn(5, 32)).shape
        (5, 8)
    """

    name = "lsh"

    def __init__(self, nbits: int, seed: int = 0):
        self.nbits = nbits
        self.seed = seed

    @property
    def spec(self) -> str:
        return f"lsh:{self.nbits}"

    def _validate(self, n: int, d: int) -> None:
        nbits = check_positive_int(self.nbits, "lsh nbits")
        check_positive_int(self.seed, "lsh seed", minimum=0)
        if nbits > MAX_BITS_PER_DIM * d:
            raise SpecError(
                f"lsh:{nbits}: at most {MAX_BITS_PER_DIM * d} bits for {d}-dimensional vectors "
                f"({MAX_BITS_PER_DIM} per dimension, the size of the float32 vector itself); use a smaller lsh:NBITS"
            )

    def _fit(self, X: np.ndarray) -> None:
        rng = np.random.default_rng(int(self.seed))
        self.nbits_ = int(self.nbits)
        self.planes_ = rng.standard_normal((X.shape[1], self.nbits_)).astype(np.float32)

    def bits(self, X: np.ndarray) -> np.ndarray:
        return X @ self.planes_ > 0

    def state(self):
        config, arrays = super().state()
        arrays["planes"] = self.planes_
        return config, arrays

    def set_state(self, config, arrays):
        super().set_state(config, arrays)
        self.nbits_ = int(config.get("nbits_", self.nbits))
        self.planes_ = np.asarray(arrays["planes"], dtype=np.float32)
