"""``itq:NBITS``: iterative quantization (Gong & Lazebnik, CVPR 2011; TPAMI 2013).

Fit: centre the vectors, project them on their top ``NBITS`` principal directions (PCA, so
``NBITS <= dim``), then learn an orthogonal rotation ``R`` that minimises the quantization error
``||sign(V R) - V R||_F^2`` by alternating two exact steps for ``n_iter`` iterations (50, as the
paper): fix ``R`` and set ``B = sign(V R)``; fix ``B`` and solve the orthogonal Procrustes problem
``R = argmin ||B - V R||`` via the SVD of ``V^T B``. The rotation starts from a seeded random
orthogonal matrix, as in the paper. Codes are the bits of ``sign((x - mean) P R)``, searched by
Hamming distance like every binary code.
"""

from __future__ import annotations

import numpy as np

from embedkit.compression.binary import BinaryQuantizer
from embedkit.errors import EmbedkitError, SpecError
from embedkit.validation import check_positive_int

__all__ = ["ITQQuantizer", "random_rotation"]


def random_rotation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random ``n x n`` orthogonal matrix (QR of a Gaussian matrix, sign-corrected)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


class ITQQuantizer(BinaryQuantizer):
    """PCA to ``nbits`` dimensions + learned orthogonal rotation, then sign (``nbits/8`` bytes).

    Args:
        nbits: bits per code; at most the input dimension (ITQ projects, it cannot add dimensions).
        n_iter: alternating-minimisation iterations (the paper uses 50).
        seed: seed of the initial random rotation.

    Attributes (after fit):
        mean_: ``(dim,)`` centre; components_: ``(dim, nbits)`` PCA basis; rotation_:
        ``(nbits, nbits)`` orthogonal rotation.

    Example:
        >>> import numpy as np
        >>> q = ITQQuantizer(16).fit(np.random.randn(500, 32))
        >>> np.allclose(q.rotation_ @ q.rotation_.T, np.eye(16), atol=1e-5)
        True
    """

    name = "itq"

    def __init__(self, nbits: int, n_iter: int = 50, seed: int = 0):
        self.nbits = nbits
        self.n_iter = n_iter
        self.seed = seed

    @property
    def spec(self) -> str:
        return f"itq:{self.nbits}"

    def _validate(self, n: int, d: int) -> None:
        nbits = check_positive_int(self.nbits, "itq nbits")
        check_positive_int(self.n_iter, "itq n_iter", minimum=0)
        check_positive_int(self.seed, "itq seed", minimum=0)
        if nbits > d:
            raise SpecError(
                f"itq:{nbits} needs at most as many bits as input dimensions ({d}); "
                f"use itq:{d} or lsh:{nbits} / bebr for longer codes"
            )
        if n < 2:
            raise EmbedkitError(f"itq needs at least 2 training vectors, got {n}")

    def _fit(self, X: np.ndarray) -> None:
        n, d = X.shape
        nbits = int(self.nbits)
        X64 = X.astype(np.float64)
        mean = X64.mean(axis=0)
        Xc = X64 - mean
        # PCA via the covariance eigendecomposition (d x d, cheap for embedding widths)
        evals, evecs = np.linalg.eigh(Xc.T @ Xc / max(n - 1, 1))
        P = evecs[:, np.argsort(evals)[::-1][:nbits]]
        V = Xc @ P
        R = random_rotation(nbits, np.random.default_rng(int(self.seed)))
        for _ in range(int(self.n_iter)):
            B = np.where(V @ R >= 0, 1.0, -1.0)
            U, _, Wt = np.linalg.svd(V.T @ B)
            R = U @ Wt
        self.nbits_ = nbits
        self.mean_ = mean.astype(np.float32)
        self.components_ = P.astype(np.float32)
        self.rotation_ = R.astype(np.float32)

    def project(self, X) -> np.ndarray:
        """The rotated PCA coordinates ``(x - mean) P R`` whose signs are the code bits."""
        X = self._check_input(X)
        return ((X - self.mean_) @ self.components_) @ self.rotation_

    def quantization_error(self, X, rotation: np.ndarray | None = None) -> float:
        """Mean ``||sign(V R) - V R||^2`` per vector (ITQ's objective) for the fitted or a given rotation."""
        X = self._check_input(X)
        R = self.rotation_ if rotation is None else np.asarray(rotation, dtype=np.float32)
        VR = ((X - self.mean_) @ self.components_) @ R
        return float(((np.where(VR >= 0, 1.0, -1.0) - VR) ** 2).sum(axis=1).mean())

    def bits(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) @ self.components_) @ self.rotation_ >= 0

    def state(self):
        config, arrays = super().state()
        arrays.update(mean=self.mean_, components=self.components_, rotation=self.rotation_)
        return config, arrays

    def set_state(self, config, arrays):
        super().set_state(config, arrays)
        self.nbits_ = int(config.get("nbits_", self.nbits))
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        self.components_ = np.asarray(arrays["components"], dtype=np.float32)
        self.rotation_ = np.asarray(arrays["rotation"], dtype=np.float32)
