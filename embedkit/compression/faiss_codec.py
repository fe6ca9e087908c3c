"""Quantizers whose codes FAISS computes (``float``, ``f16``, ``int8``; PQ/OPQ/RaBitQ build on it).

A FAISS factory-string *body* (``"Flat"``, ``"SQfp16"``, ``"SQ8"``, ``"PQ48x8"``...) defines the
codec; the search index is ``body`` (flat), ``HNSW{M},body`` or ``IVF{nlist},body`` with inner
product as the metric. The fitted codec is stored as FAISS' own serialisation (bytes, not pickle).
"""

from __future__ import annotations

import numpy as np

from embedkit.compression.base import (
    FaissCodeIndex,
    Quantizer,
    check_backend,
    check_matrix,
    check_nlist,
    enable_reconstruct,
)
from embedkit.errors import EmbedkitError

__all__ = ["FaissCodecQuantizer", "Float16Quantizer", "FloatQuantizer", "Int8Quantizer"]


class FaissCodecQuantizer(Quantizer):
    """Base class: a quantizer defined by a FAISS factory-string body."""

    #: backends this codec supports
    backends: tuple[str, ...] = ("flat", "hnsw", "ivf")
    #: optional FAISS pre-transform prefix such as ``"OPQ16"`` (goes before HNSW/IVF)
    prefix: str = ""

    def body(self, dim: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _factory(self, dim: int, backend: str, nlist: int | None = None, hnsw_m: int = 32) -> str:
        parts = [self.prefix] if self.prefix else []
        if backend == "hnsw":
            parts.append(f"HNSW{hnsw_m}")
        elif backend == "ivf":
            parts.append(f"IVF{nlist}")
        parts.append(self.body(dim))
        return ",".join(parts)

    def _fit(self, X: np.ndarray) -> None:
        import faiss

        codec = faiss.index_factory(X.shape[1], self._factory(X.shape[1], "flat"), faiss.METRIC_INNER_PRODUCT)
        self._configure(codec)
        codec.train(X)
        self.codec_ = codec

    def _configure(self, codec) -> None:
        """Set training options on the FAISS codec the factory built, before it trains (none by default)."""

    def encode(self, X) -> np.ndarray:
        X = self._check_input(X)
        return self.codec_.sa_encode(X)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._check_fitted()
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise EmbedkitError(f"codes must have shape (n, {self.code_size}), got {codes.shape}")
        return self.codec_.sa_decode(codes)

    @property
    def code_size(self) -> int:
        self._check_fitted()
        return int(self.codec_.sa_code_size())

    def new_index(self, backend="flat", *, nlist=None, hnsw_m=32, train_X=None) -> FaissCodeIndex:
        import faiss

        self._check_fitted()
        check_backend(backend)
        if backend not in self.backends:
            raise EmbedkitError(f"{self.spec} supports index types {', '.join(self.backends)}, not {backend!r}")
        d = self.dim_in_
        if backend == "flat":
            index = faiss.clone_index(self.codec_)
            index.reset()
        else:
            if train_X is None:
                raise EmbedkitError(f"backend {backend!r} needs training vectors (train_X)")
            train_X = check_matrix(train_X, d, "training vectors")
            nlist = check_nlist(nlist, len(train_X)) if backend == "ivf" else None
            index = faiss.index_factory(d, self._factory(d, backend, nlist, hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.train(train_X)
            if backend == "ivf":
                enable_reconstruct(index)
        return FaissCodeIndex(index, lambda X: check_matrix(X, d), binary=False, backend=backend)

    def index_from_bytes(self, data: bytes, backend: str) -> FaissCodeIndex:
        self._check_fitted()
        d = self.dim_in_
        return FaissCodeIndex(FaissCodeIndex.read_index(data, False), lambda X: check_matrix(X, d), backend=backend)

    def state(self):
        import faiss

        config, arrays = super().state()
        arrays["codec"] = faiss.serialize_index(self.codec_)
        return config, arrays

    def set_state(self, config, arrays):
        import faiss

        super().set_state(config, arrays)
        self.codec_ = faiss.deserialize_index(np.ascontiguousarray(arrays["codec"], dtype=np.uint8))


class FloatQuantizer(FaissCodecQuantizer):
    """``float``: the float32 vectors themselves (exact inner product); 4 bytes per dimension."""

    name = "float"

    def __init__(self):
        pass

    def body(self, dim):
        return "Flat"


class Float16Quantizer(FaissCodecQuantizer):
    """``f16``: IEEE half precision per dimension (FAISS ``SQfp16``); 2 bytes per dimension."""

    name = "f16"

    def __init__(self):
        pass

    def body(self, dim):
        return "SQfp16"


class Int8Quantizer(FaissCodecQuantizer):
    """``int8``: per-dimension scalar quantization to 256 levels; 1 byte per dimension.

    The range of every dimension is its minimum and maximum over the fitting vectors (the corpus),
    as sentence-transformers' ``quantize_embeddings(..., "int8", calibration_embeddings=corpus)``
    calibrates; FAISS' ``SQ8`` with its default min/max range statistic computes exactly that
    range and stores codes ``round((x - min) / (max - min) * 255)`` (sentence-transformers uses
    255 buckets and a -128 offset: the same grid up to rounding). Queries stay float and are
    scored against decoded codes (asymmetric distance), as the anchor does with rescoring off.
    """

    name = "int8"

    def __init__(self):
        pass

    def body(self, dim):
        return "SQ8"
