"""``pq:MxNBITS`` and ``opq:MxNBITS``: product quantization through FAISS.

PQ (Jegou, Douze & Schmid, TPAMI 2011) cuts a vector into ``M`` sub-vectors and stores, for each,
the id of the nearest of ``2^NBITS`` k-means centroids learned on the fitting vectors: ``M*NBITS/8``
bytes per vector. Queries stay float: the score is the inner product of the query with the
decoded code (asymmetric distance, a lookup table per sub-space). OPQ (Ge et al., CVPR 2013) first
learns an orthogonal rotation that balances the variance across the sub-spaces (FAISS ``OPQ{M}``
pre-transform). The dimension must be divisible by ``M``.
"""

from __future__ import annotations

from embedkit.compression.faiss_codec import FaissCodecQuantizer
from embedkit.errors import EmbedkitError, SpecError
from embedkit.validation import check_positive_int

__all__ = ["FAISS_MIN_POINTS_PER_CENTROID", "OPQ_ROTATION_CENTROIDS", "OPQQuantizer", "PQQuantizer"]

#: FAISS ``ClusteringParameters.min_points_per_centroid``: k-means with fewer training vectors per centroid warns
FAISS_MIN_POINTS_PER_CENTROID = 39


class PQQuantizer(FaissCodecQuantizer):
    """FAISS ``PQ{m}x{nbits}``: ``m`` sub-quantizers of ``2^nbits`` centroids each.

    Args:
        m: number of sub-vectors (bytes per vector when ``nbits`` is 8); must divide the dimension.
        nbits: bits per sub-vector code (1..16; 8 is the usual and fastest).

    Fitting needs at least ``2^nbits`` vectors (one per centroid); FAISS recommends 39 times that
    (:attr:`recommended_fit_size`; below it FAISS warns and the codebooks are under-trained).

    Example:
        >>> import numpy as np
        >>> q = PQQuantizer(8, 4).fit(np.random.randn(300, 32))
        >>> q.code_size
        4
    """

    name = "pq"

    def __init__(self, m: int, nbits: int = 8):
        self.m = m
        self.nbits = nbits

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.m}x{self.nbits}"

    @property
    def recommended_fit_size(self) -> int:  # type: ignore[override]
        """FAISS's floor for a well-trained codebook: 39 training vectors per centroid (``39 * 2^nbits``)."""
        return FAISS_MIN_POINTS_PER_CENTROID * 2 ** int(self.nbits)

    def body(self, dim: int) -> str:
        # "np": no polysemous training (a centroid renumbering for Hamming pre-filtering, which embedkit never
        # searches with): the same codebook up to centroid order, the same ADC results, 30x faster to fit
        return f"PQ{self.m}x{self.nbits}np"

    def _validate(self, n: int, d: int) -> None:
        m = check_positive_int(self.m, f"{self.name} m (sub-vectors)")
        nbits = check_positive_int(self.nbits, f"{self.name} nbits", maximum=16)
        if m > d or d % m:
            raise SpecError(f"{self.spec}: the dimension {d} is not divisible by m={m}; "
                            f"choose m among the divisors of {d} (e.g. {_divisor_hint(d, m)})")
        if n < 2**nbits:
            raise EmbedkitError(f"{self.spec} needs at least {2 ** nbits} training vectors (one per centroid), got {n}")


def _divisor_hint(d: int, m: int) -> str:
    divisors = [k for k in range(1, d + 1) if d % k == 0]
    near = sorted(divisors, key=lambda k: (abs(k - m), k))[:3]
    return ", ".join(f"{k}" for k in sorted(near))


#: centroids per sub-space of the codebooks FAISS's OPQMatrix fits while learning the rotation (8 bits, whatever
#: the quantizer's nbits): the fewest vectors ``OPQQuantizer(rotation_sample=)`` may be
OPQ_ROTATION_CENTROIDS = 256


class OPQQuantizer(PQQuantizer):
    """FAISS ``OPQ{m},PQ{m}x{nbits}``: a learned rotation, then product quantization.

    Args:
        m, nbits: as :class:`PQQuantizer`.
        niter: alternations of the rotation's fit (FAISS ``OPQMatrix.niter``, default 50): each one
            re-learns the sub-space codebooks and solves for the rotation, so the fit's cost grows
            linearly with it. The budget tuner screens OPQ candidates with fewer (their ranking
            against other codecs settles within ~10) and builds the chosen index with the default.
        rotation_sample: at most this many fitting vectors learn the rotation (FAISS
            ``OPQMatrix.max_train_points``; ``None``: FAISS's 65,536; at least 256); the codebooks that
            follow it are still fitted on every vector. The budget tuner screens with its sample size here.

    Example:
        >>> import numpy as np
        >>> q = OPQQuantizer(8, 4).fit(np.random.randn(300, 32))
        >>> q.code_size
        4
    """

    name = "opq"

    def __init__(self, m: int, nbits: int = 8, niter: int = 50, rotation_sample: int | None = None):
        super().__init__(m, nbits)
        self.niter = niter
        self.rotation_sample = rotation_sample

    def _validate(self, n: int, d: int) -> None:
        super()._validate(n, d)
        check_positive_int(self.niter, "opq niter (rotation iterations)")
        if self.rotation_sample is not None:
            r = check_positive_int(self.rotation_sample, "opq rotation_sample (vectors learning the rotation)")
            if r < OPQ_ROTATION_CENTROIDS:
                raise EmbedkitError(f"opq rotation_sample is {r}: FAISS learns the rotation with its own "
                                    f"{OPQ_ROTATION_CENTROIDS}-centroid codebooks, so give at least "
                                    f"{OPQ_ROTATION_CENTROIDS} (or None)")

    def _configure(self, codec) -> None:
        import faiss

        opq = faiss.downcast_VectorTransform(faiss.downcast_index(codec).chain.at(0))
        opq.niter = int(self.niter)
        if self.rotation_sample is not None:
            opq.max_train_points = int(self.rotation_sample)

    @property
    def prefix(self) -> str:  # type: ignore[override]
        return f"OPQ{self.m}"
