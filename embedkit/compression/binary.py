"""Binary codes searched by Hamming distance: ``binary`` (sign); base class for LSH and ITQ.

A binary quantizer maps a float vector to ``nbits_`` bits, packed 8 per byte (``np.packbits``,
big-endian bit order as sentence-transformers' ``ubinary``). FAISS' binary indexes compare
codes by Hamming distance h; scores are reported as ``1 - 2h/nbits_``, the cosine between the
two +-1 vectors, so higher is more similar as for every other quantizer.
"""

from __future__ import annotations

import numpy as np

from embedkit.compression.base import FaissCodeIndex, Quantizer, check_backend, check_nlist, enable_reconstruct
from embedkit.errors import EmbedkitError

__all__ = ["BinaryQuantizer", "SignBinaryQuantizer"]


class BinaryQuantizer(Quantizer):
    """Base class: subclasses set ``nbits_`` in ``_fit`` and implement :meth:`bits`."""

    def bits(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Boolean ``(n, nbits_)`` code bits of validated input vectors."""
        raise NotImplementedError

    @property
    def padded_bits(self) -> int:
        """``nbits_`` rounded up to whole bytes (FAISS binary indexes need a multiple of 8)."""
        self._check_fitted()
        return -(-self.nbits_ // 8) * 8

    @property
    def code_size(self) -> int:
        self._check_fitted()
        return self.padded_bits // 8

    def encode(self, X) -> np.ndarray:
        X = self._check_input(X)
        return np.packbits(self.bits(X).astype(bool), axis=1)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """+-1 vectors of the code bits (the first ``nbits_``)."""
        self._check_fitted()
        b = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1)[:, : self.nbits_]
        return b.astype(np.float32) * 2 - 1

    def new_index(self, backend="flat", *, nlist=None, hnsw_m=32, train_X=None) -> FaissCodeIndex:
        import faiss

        self._check_fitted()
        check_backend(backend)
        nb = self.padded_bits
        if backend == "flat":
            index = faiss.IndexBinaryFlat(nb)
        elif backend == "hnsw":
            index = faiss.IndexBinaryHNSW(nb, hnsw_m)
        else:
            if train_X is None:
                raise EmbedkitError("backend 'ivf' needs training vectors (train_X)")
            codes = self.encode(train_X)
            nlist = check_nlist(nlist, len(codes))
            quantizer = faiss.IndexBinaryFlat(nb)
            index = faiss.IndexBinaryIVF(quantizer, nb, nlist)
            index.own_fields = True
            quantizer.this.disown()
            index.train(codes)
            enable_reconstruct(index)
        return FaissCodeIndex(index, self.encode, binary=True, nbits=self.nbits_, backend=backend)

    def index_from_bytes(self, data: bytes, backend: str) -> FaissCodeIndex:
        self._check_fitted()
        return FaissCodeIndex(FaissCodeIndex.read_index(data, True), self.encode, binary=True, nbits=self.nbits_,
                              backend=backend)

    def set_state(self, config, arrays):
        super().set_state(config, arrays)
        self.nbits_ = int(config.get("nbits_", config["dim_in"]))

    def state(self):
        config, arrays = super().state()
        config["nbits_"] = int(self.nbits_)
        return config, arrays


class SignBinaryQuantizer(BinaryQuantizer):
    """``binary``: one bit per dimension, set where the value is positive (32x smaller than float).

    The same code as sentence-transformers' ``quantize_embeddings(x, "ubinary")``.
    """

    name = "binary"

    def __init__(self):
        pass

    def _fit(self, X):
        self.nbits_ = int(X.shape[1])

    def bits(self, X):
        return X > 0
