"""The stage protocol, the quantizer protocol and the FAISS search index every quantizer hands to EmbeddingIndex.

Two kinds of compression stage compose in a spec string (see :mod:`embedkit.compression.spec`):

* a :class:`Transform` maps float vectors to float vectors (``mrl:128`` truncation);
* a :class:`Quantizer` maps float vectors to compact codes (``uint8`` rows of ``code_size``
  bytes) and builds the FAISS index that searches them (:class:`CodeIndex`).

Every stage follows scikit-learn's estimator contract: ``__init__`` stores its hyper-parameters
verbatim (no validation, nothing derived), :meth:`Stage.fit` validates them against the fitting
vectors and sets the learned attributes (names ending in ``_``; ``dim_in_`` marks a fitted stage),
and :meth:`Stage.get_params` / :meth:`Stage.set_params` read and change the hyper-parameters.
A fitted stage is persisted by :class:`~embedkit.compression.pipeline.CompressionPipeline`
(``save``/``load``) through :meth:`Stage.state` (a JSON-able config dict plus numpy arrays, stored as
JSON + npz, never pickled) and :meth:`Stage.set_state`.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any, ClassVar

import numpy as np

from embedkit.errors import EmbedkitError
from embedkit.validation import check_is_fitted, check_positive_int

__all__ = [
    "BACKENDS",
    "CodeIndex",
    "FaissCodeIndex",
    "Quantizer",
    "Stage",
    "Transform",
    "check_backend",
    "check_matrix",
    "check_nlist",
    "default_nlist",
    "enable_reconstruct",
    "l2_normalize",
    "single_thread_for_small_batches",
    "stage_types",
]

BACKENDS = ("flat", "hnsw", "ivf")

#: stage name -> class, filled as stage classes are defined (see :func:`stage_types`)
_STAGE_TYPES: dict[str, type] = {}


def stage_types() -> dict[str, type]:
    """Every defined stage class by its spec name (what a saved pipeline is rebuilt from).

    The spec grammar and its table of names live in :mod:`embedkit.compression.spec`; this map only
    lets :meth:`~embedkit.compression.pipeline.CompressionPipeline.load` find the class of a saved
    stage without importing the spec parser (importing :mod:`embedkit.compression` defines them all).
    """
    return dict(_STAGE_TYPES)


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


def l2_normalize(X: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as float32.

    ``copy=False`` scales a float32 ``X`` in place (no temporary of its size: for large samples).
    """
    if not copy and X.dtype == np.float32:
        X /= np.maximum(np.sqrt(np.einsum("ij,ij->i", X, X)), 1e-12)[:, None]
        return X
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.maximum(n, 1e-12)).astype(np.float32, copy=False)


def renamed_keyword(new_value, old_value, old: str, new: str, owner: str):
    """Resolve a deprecated keyword: warn and return ``old_value`` when it was given."""
    if old_value is None:
        return new_value
    warnings.warn(f"{owner}: {old}= is deprecated; use {new}=", DeprecationWarning, stacklevel=3)
    return old_value


class Stage:
    """Common machinery of transforms and quantizers: parameters, fitted-state checks, (de)serialisation.

    Subclasses list their hyper-parameters as ``__init__`` arguments and store each under its own
    name; :meth:`_validate` checks them at fit time against the fitting data's shape.
    """

    #: spec-string name of the stage, e.g. ``"binary"``
    name: ClassVar[str] = ""
    #: deprecated ``__init__`` keywords (not parameters; ``set_params`` maps them): old -> new
    renamed_params: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            _STAGE_TYPES[cls.name] = cls

    # -- scikit-learn parameter protocol ---------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The hyper-parameter names: ``__init__``'s arguments, without deprecated aliases."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                and p.name not in cls.renamed_params]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters as passed to ``__init__`` (scikit-learn's ``get_params``)."""
        return {k: getattr(self, k) for k in self.param_names()}

    def set_params(self, **params) -> Stage:
        """Change hyper-parameters (validated by the next :meth:`fit`); returns ``self``.

        Raises:
            EmbedkitError: a name that is not a parameter of this stage (the message lists them).
        """
        names = self.param_names()
        for key, value in params.items():
            if key in self.renamed_params:
                warnings.warn(f"{type(self).__name__}: {key} is deprecated; use {self.renamed_params[key]}",
                              DeprecationWarning, stacklevel=2)
                key = self.renamed_params[key]
            if key not in names:
                raise EmbedkitError(f"{type(self).__name__} ({self.name}) has no parameter {key!r}; "
                                    f"its parameters are: {', '.join(names) or 'none'}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitting -----------------------------------------------------------------------------
    def _validate(self, n: int, d: int) -> None:
        """Check the hyper-parameters against ``n`` fitting vectors of dimension ``d`` (raise SpecError)."""

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "dim_in_", None) is not None

    def _check_fitted(self) -> None:
        check_is_fitted(self, "dim_in_")

    def _check_input(self, X, what="embeddings") -> np.ndarray:
        self._check_fitted()
        return check_matrix(X, self.dim_in_, what)

    @property
    def spec(self) -> str:
        """The spec token that recreates this stage, e.g. ``"mrl:128"``."""
        return self.name

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able config, arrays) of the learned attributes of the fitted stage."""
        return {"dim_in": self.dim_in_}, {}

    def set_state(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore the learned attributes written by :meth:`state` (the parameters are set already)."""
        self.dim_in_ = config["dim_in"]


class Transform(Stage):
    """A float -> float stage."""

    def fit(self, X) -> Transform:
        X = check_matrix(X)
        self._validate(*X.shape)
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

    #: training vectors below which the codec is under-trained (0: any number does); see
    #: :attr:`embedkit.compression.pq.PQQuantizer.recommended_fit_size`
    recommended_fit_size: int = 0

    def fit(self, X) -> Quantizer:
        """Validate the hyper-parameters against ``X``, learn the codec from ``X``; returns ``self``."""
        X = check_matrix(X)
        if len(X) == 0:
            raise EmbedkitError(f"cannot fit {self.spec} on 0 vectors")
        self._validate(*X.shape)
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

    def new_index(self, backend: str = "flat", *, nlist: int | None = None, hnsw_m: int = 32, train_X=None) -> CodeIndex:
        """An empty :class:`CodeIndex` searching this quantizer's codes."""
        raise NotImplementedError  # pragma: no cover


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise a one-line error."""
    if backend not in BACKENDS:
        raise EmbedkitError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


_check_backend = check_backend  # old private name (deprecated alias)


def default_nlist(n: int) -> int:
    """IVF list count for n vectors: about 4*sqrt(n), at least 1, at most n/39 (FAISS' training floor)."""
    return int(max(1, min(4 * np.sqrt(max(n, 1)), max(1, n // 39))))


def check_nlist(nlist, n_train: int) -> int:
    """The IVF list count for ``n_train`` training vectors: ``nlist`` checked, or :func:`default_nlist`.

    Raises:
        EmbedkitError: ``nlist`` is not a whole number >= 1, or exceeds the number of training
            vectors (every list needs at least one vector to be trained on).
    """
    if nlist is None:
        return default_nlist(n_train)
    nlist = check_positive_int(nlist, "nlist (IVF lists, --nlist)")
    if nlist > n_train:
        raise EmbedkitError(
            f"nlist (IVF lists, --nlist) is {nlist} but backend 'ivf' has only {n_train} training vectors: "
            f"use nlist <= {n_train} (FAISS recommends >= 39 vectors per list) or leave it unset"
        )
    return nlist


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


def faiss_scores(D: np.ndarray, binary: bool, nbits: int) -> np.ndarray:
    """Similarity scores (higher is better) from FAISS distances: Hamming counts become ``1 - 2h/nbits``
    (the cosine of the two sign vectors), inner products stay as they are."""
    return (1.0 - 2.0 * D.astype(np.float32) / float(nbits)) if binary else D.astype(np.float32)


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
        #: True when the owner (e.g. an EmbeddingIndex) set nprobe / efSearch itself: searches then use
        #: them as they are (efSearch at least k), not raised to the floors bare code indexes get
        self.fixed_search_params = False

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, X: np.ndarray) -> None:
        self.index.add(self.to_input(X))

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _set_search_params(self.index, self.backend, k, fixed=self.fixed_search_params)
        X = self.to_input(Q)
        import faiss

        if isinstance(self.index, faiss.IndexBinaryFlat):
            # FAISS' counting-based Hamming top-k is 3x faster than its heap for query batches
            # (300 x 5k codes), the heap slightly faster for one query over 200k codes.
            self.index.use_heap = len(X) < 16
        with single_thread_for_small_batches(len(X)):
            D, rows = self.index.search(X, k)
        return faiss_scores(D, self.binary, self.nbits), rows.astype(np.int64)

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

    ivf = ivf_of(index)
    if ivf is not None:
        ivf.set_direct_map_type(faiss.DirectMap.Array)


def ivf_of(index):
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


def hnsw_of(index):
    """The index holding the HNSW graph inside ``index`` (plain or wrapped), or None."""
    import faiss

    inner = index
    while not hasattr(inner, "hnsw") and hasattr(inner, "index"):
        inner = faiss.downcast_index(inner.index)
    return inner if hasattr(inner, "hnsw") else None



def _set_search_params(index, backend: str, k: int, *, fixed: bool = False) -> None:
    """Search effort of a bare code index: efSearch >= max(2k, 64), nprobe >= 16 (FAISS' defaults,
    16 and 1, lose most neighbours). With ``fixed`` (set by the owner) only efSearch >= k is enforced."""
    if backend == "hnsw":
        inner = hnsw_of(index)
        if inner is not None:
            floor = k if fixed else max(2 * k, 64)
            inner.hnsw.efSearch = max(int(inner.hnsw.efSearch), floor)
    elif backend == "ivf" and not fixed:
        ivf = ivf_of(index)
        ivf.nprobe = max(int(ivf.nprobe), min(16, int(ivf.nlist)))
