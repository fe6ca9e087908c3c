"""The quantizer protocol and the FAISS search index every quantizer hands to EmbeddingIndex.

Two kinds of compression stage compose in a spec string (see :mod:`embedkit.compression.spec`):

* a :class:`Transform` maps float vectors to float vectors (``mrl:128`` truncation);
* a :class:`Quantizer` maps float vectors to compact codes (``uint8`` rows of ``code_size``
  bytes) and builds the FAISS index that searches them (:class:`CodeIndex`).

Every stage: ``fit(X) -> self``, ``save``/``load`` through :meth:`state` / :meth:`from_state`
(a JSON-able config dict plus numpy arrays, stored as JSON + npz, never pickled).
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import numpy as np

from embedkit.errors import EmbedkitError, NotFittedError

BACKENDS = ("flat", "hnsw", "ivf")


def check_matrix(X, dim: int | None = None, what: str = "embeddings") -> np.ndarray:
    """Validate a 2-D finite float matrix (optionally of width ``dim``); return it as float32."""
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise EmbedkitError(f"{what} must be a 2-D array (n, dim), got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise EmbedkitError(f"{what} must be numeric, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if dim is not None and X.shape[1] != dim:
        raise EmbedkitError(f"{what} have dimension {X.shape[1]}, expected {dim}")
    if not np.isfinite(X).all():
        row = int(np.nonzero(~np.isfinite(X).all(axis=1))[0][0])
        raise EmbedkitError(f"{what} contain NaN or inf (first at row {row})")
    return X


def l2_normalize(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


class Stage:
    """Common machinery of transforms and quantizers: fitted-state checks and (de)serialisation."""

    #: spec-string name of the stage, e.g. ``"binary"``
    name: ClassVar[str] = ""

    dim_in_: int | None = None

    @property
    def is_fitted(self) -> bool:
        return self.dim_in_ is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} ({self.spec}) is not fitted; call fit(X) first")

    def _check_input(self, X, what="embeddings") -> np.ndarray:
        self._check_fitted()
        return check_matrix(X, self.dim_in_, what)

    @property
    def spec(self) -> str:
        """The spec token that recreates this stage, e.g. ``"mrl:128"``."""
        return self.name

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able config, arrays) fully describing the fitted stage."""
        return {"dim_in": self.dim_in_}, {}

    def _set_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.dim_in_ = config["dim_in"]


class Transform(Stage):
    """A float -> float stage."""

    def fit(self, X) -> "Transform":
        X = check_matrix(X)
        self.dim_in_ = X.shape[1]
        return self

    def transform(self, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def dim_out(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class Quantizer(Stage):
    """A float -> codes stage and the FAISS index that searches its codes.

    Subclasses implement :meth:`_fit`, :meth:`encode`, :attr:`code_size` and :meth:`new_index`.
    """

    def fit(self, X) -> "Quantizer":
        X = check_matrix(X)
        if len(X) == 0:
            raise EmbedkitError(f"cannot fit {self.spec} on 0 vectors")
        self._fit(X)
        self.dim_in_ = X.shape[1]
        return self

    def _fit(self, X: np.ndarray) -> None:
        pass

    def encode(self, X) -> np.ndarray:  # pragma: no cover - abstract
        """Codes as a ``uint8`` array of shape ``(n, code_size)``."""
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:  # pragma: no cover - optional
        raise NotImplementedError(f"{self.spec} codes cannot be decoded")

    @property
    def code_size(self) -> int:  # pragma: no cover - abstract
        """Bytes per vector in the index (without rescoring vectors)."""
        raise NotImplementedError

    def new_index(self, backend: str = "flat", *, nlist: int | None = None, hnsw_m: int = 32, train_X=None) -> "CodeIndex":
        """An empty :class:`CodeIndex` searching this quantizer's codes."""
        raise NotImplementedError  # pragma: no cover


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise EmbedkitError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def default_nlist(n: int) -> int:
    """IVF list count for n vectors: about 4*sqrt(n), at least 1, at most n/39 (FAISS' training floor)."""
    return int(max(1, min(4 * np.sqrt(max(n, 1)), max(1, n // 39))))


class CodeIndex:
    """What :class:`~embedkit.retrieval.index.EmbeddingIndex` needs from a search structure.

    Rows are dense positions 0..ntotal-1 in insertion order; ``remove`` keeps the order of the
    remaining rows (so positions shift down, like a list).
    """

    def add(self, X: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        """(scores, rows), both ``(nq, k)``; higher score = more similar; row -1 pads."""
        raise NotImplementedError

    def remove(self, rows: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    @property
    def ntotal(self) -> int:  # pragma: no cover
        raise NotImplementedError

    def to_bytes(self) -> bytes:  # pragma: no cover
        raise NotImplementedError


class FaissCodeIndex(CodeIndex):
    """A FAISS index (float-input or binary) behind the :class:`CodeIndex` interface.

    Args:
        index: the FAISS index (already trained if it needs training).
        to_input: maps float vectors to what ``index.add``/``search`` take (the floats themselves,
            or packed bits for binary indexes).
        binary: whether ``index`` is a ``faiss.IndexBinary`` (distances are Hamming counts).
        nbits: bits per binary code (scores become ``1 - 2*hamming/nbits``, the cosine of the
            +-1 vectors).
    """

    def __init__(self, index, to_input, *, binary: bool = False, nbits: int = 0, backend: str = "flat"):
        self.index = index
        self.to_input = to_input
        self.binary = binary
        self.nbits = nbits
        self.backend = backend

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, X: np.ndarray) -> None:
        self.index.add(self.to_input(X))

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _set_search_params(self.index, self.backend, k)
        X = self.to_input(Q)
        import faiss

        if isinstance(self.index, faiss.IndexBinaryFlat):
            # FAISS' counting-based Hamming top-k is 3x faster than its heap for query batches
            # (300 x 5k codes), the heap slightly faster for one query over 200k codes.
            self.index.use_heap = len(X) < 16
        with single_thread_for_small_batches(len(X)):
            D, rows = self.index.search(X, k)
        if self.binary:
            scores = 1.0 - 2.0 * D.astype(np.float32) / float(self.nbits)
        else:
            scores = D.astype(np.float32)
        return scores, rows.astype(np.int64)

    def remove(self, rows: np.ndarray) -> None:
        import faiss

        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if len(rows) == 0:
            return
        if self.backend == "flat":
            self.index.remove_ids(faiss.IDSelectorBatch(rows))
            return
        # HNSW cannot remove and IVF would keep stale labels: rebuild from the surviving codes.
        n = self.ntotal
        keep = np.setdiff1d(np.arange(n, dtype=np.int64), rows)
        stored = self.index.reconstruct_n(0, n)[keep]
        self.index.reset()
        if self.backend == "ivf":
            enable_reconstruct(self.index)
        if len(stored):
            self.index.add(stored)

    def to_bytes(self) -> bytes:
        import faiss

        if self.binary:
            return faiss.serialize_index_binary(self.index).tobytes()
        return faiss.serialize_index(self.index).tobytes()

    @staticmethod
    def read_index(data: bytes, binary: bool):
        import faiss

        arr = np.frombuffer(data, dtype=np.uint8)
        return faiss.deserialize_index_binary(arr) if binary else faiss.deserialize_index(arr)


@contextlib.contextmanager
def single_thread_for_small_batches(nq: int, threshold: int = 16):
    """Run FAISS on one thread for a handful of queries.

    Waking OpenMP workers for a single query costs far more than the search itself on a busy
    machine (measured here: 23 ms vs 0.05 ms for one query over 1,540 binary codes).
    """
    import faiss

    if nq >= threshold:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def enable_reconstruct(index) -> None:
    """Give an IVF index (possibly wrapped in a pre-transform) a direct map so rows can be rebuilt."""
    import faiss

    ivf = _ivf_of(index)
    if ivf is not None:
        ivf.set_direct_map_type(faiss.DirectMap.Array)


def _ivf_of(index):
    """The IVF index inside ``index`` (binary, plain or pre-transformed), or None."""
    import faiss

    if isinstance(index, faiss.IndexBinaryIVF):
        return index
    if isinstance(index, faiss.IndexBinary):
        return None
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _set_search_params(index, backend: str, k: int) -> None:
    import faiss

    if backend == "hnsw":
        inner = index
        while not hasattr(inner, "hnsw") and hasattr(inner, "index"):
            inner = faiss.downcast_index(inner.index)
        if hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = max(int(inner.hnsw.efSearch), 2 * k, 64)
    elif backend == "ivf":
        ivf = _ivf_of(index)
        ivf.nprobe = max(int(ivf.nprobe), min(16, int(ivf.nlist)))
