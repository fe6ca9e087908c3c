"""``rabitq:NBITS``: RaBitQ through FAISS (``IndexRaBitQ``, faiss-cpu >= 1.11).

RaBitQ (Gao & Long, SIGMOD 2024; extended to several bits per dimension in "Practical and
Asymptotically Optimal Quantization of High-Dimensional Vectors", SIGMOD 2025) centres the vectors,
applies a random rotation and stores ``NBITS`` bits per dimension plus a few float correction
factors per vector, which make its inner-product estimates unbiased. FAISS factory strings are
``RaBitQ`` (1 bit) and ``RaBitQ{NBITS}``. The code size is ``dim*NBITS/8`` plus the factors, e.g. 56
bytes at 1 bit and 116 at 2 bits for 384 dimensions: report :attr:`code_size`, not ``dim*NBITS/8``.
Queries are quantized to FAISS' default ``qb`` (4 bits per dimension) when scoring. FAISS has no
HNSW index over RaBitQ codes, so the backends are ``flat`` and ``ivf``.
"""

from __future__ import annotations

from embedkit.compression.base import renamed_keyword
from embedkit.compression.faiss_codec import FaissCodecQuantizer
from embedkit.validation import check_positive_int

__all__ = ["RaBitQQuantizer"]


class RaBitQQuantizer(FaissCodecQuantizer):
    """FAISS ``IndexRaBitQ`` with ``nbits`` bits per dimension (1..4).

    Args:
        nbits: bits per dimension, 1..4 (``bits=`` is a deprecated alias).

    Example:
        >>> import numpy as np
        >>> q = RaBitQQuantizer(1).fit(np.random.randn(200, 64))
        >>> q.code_size  # 8 bytes of bits + float factors
        16
    """

    name = "rabitq"
    backends = ("flat", "ivf")
    renamed_params = {"bits": "nbits"}

    def __init__(self, nbits: int = 1, *, bits: int | None = None):
        self.nbits = renamed_keyword(nbits, bits, "bits", "nbits", "RaBitQQuantizer")

    @property
    def spec(self) -> str:
        return f"rabitq:{self.nbits}"

    def _validate(self, n: int, d: int) -> None:
        check_positive_int(self.nbits, "rabitq nbits (bits per dimension)", maximum=4)

    def body(self, dim: int) -> str:
        return "RaBitQ" if self.nbits == 1 else f"RaBitQ{self.nbits}"
