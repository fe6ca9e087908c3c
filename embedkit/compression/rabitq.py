"""``rabitq:BITS``: RaBitQ through FAISS (``IndexRaBitQ``, faiss-cpu >= 1.11).

RaBitQ (Gao & Long, SIGMOD 2024; extended to several bits per dimension in "Practical and
Asymptotically Optimal Quantization of High-Dimensional Vectors", SIGMOD 2025) centres the vectors,
applies a random rotation and stores ``BITS`` bits per dimension plus a few float correction
factors per vector, which make its inner-product estimates unbiased. FAISS factory strings are
``RaBitQ`` (1 bit) and ``RaBitQ{BITS}``. The code size is ``dim*BITS/8`` plus the factors, e.g. 56
bytes at 1 bit and 116 at 2 bits for 384 dimensions: report :attr:`code_size`, not ``dim*BITS/8``.
Queries are quantized to FAISS' default ``qb`` (4 bits per dimension) when scoring. FAISS has no
HNSW index over RaBitQ codes, so the backends are ``flat`` and ``ivf``.
"""

from __future__ import annotations

from embedkit.compression.faiss_codec import FaissCodecQuantizer
from embedkit.errors import EmbedkitError


class RaBitQQuantizer(FaissCodecQuantizer):
    """FAISS ``IndexRaBitQ`` with ``bits`` bits per dimension (1..4).

    Example:
        >>> q = RaBitQQuantizer(1).fit(np.random.randn(200, 64))
        >>> q.code_size  # 8 bytes of bits + float factors
        16
    """

    name = "rabitq"
    backends = ("flat", "ivf")

    def __init__(self, bits: int = 1):
        if not 1 <= int(bits) <= 4:
            raise EmbedkitError(f"rabitq bits per dimension must be 1..4, got {bits}")
        self.bits = int(bits)

    @property
    def spec(self) -> str:
        return f"rabitq:{self.bits}"

    def body(self, dim: int) -> str:
        return "RaBitQ" if self.bits == 1 else f"RaBitQ{self.bits}"
