"""What both index formats share below the index classes: the index types (and the deprecated
``backend=`` spelling), search-effort defaults, the result type, and the id check."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from embedkit.compression.base import BACKENDS
from embedkit.errors import EmbedkitError

__all__ = ["DEFAULT_EF_SEARCH", "INDEX_TYPES", "Hit", "check_ids", "default_nprobe", "resolve_index_type"]

#: HNSW efSearch used unless ``ef_search`` is given (searches use at least k)
DEFAULT_EF_SEARCH = 128


def default_nprobe(nlist: int) -> int:
    """IVF lists visited per query unless ``nprobe`` is given: ``ceil(1.7 * nlist**0.7)``, at most ``nlist``.

    Measured on 20,000 real sentence embeddings of the default model (``unlabeled/``, held-out
    sentences as queries): float-IVF reaches recall@10 >= 0.99 of exact search at nprobe 48 of 128
    lists and 128 of 507 lists; this rule gives 51 and 134 (2,828 lists: 444; 5,657: 720).

    Example:
        >>> default_nprobe(128), default_nprobe(507), default_nprobe(4)
        (51, 134, 4)
    """
    import math

    nlist = int(nlist)
    return max(1, min(nlist, math.ceil(1.7 * nlist ** 0.7)))


@dataclass
class Hit:
    """One search result."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] | None = field(default=None)


def check_ids(ids) -> list[str]:
    """Document ids as strings: one string, or a sequence of strings / whole numbers (refused otherwise)."""
    if isinstance(ids, str):
        return [ids]
    out = []
    for i in ids:
        if isinstance(i, str):
            out.append(i)
        elif hasattr(i, "__index__") and not isinstance(i, bool):
            out.append(str(int(i)))
        else:
            raise EmbedkitError(f"document ids must be strings, got {i!r}")
    return out


#: FAISS structures an index can search its codes with (``index_type=``, ``--index-type``)
INDEX_TYPES = tuple(BACKENDS)
_ENCODER_BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")


def resolve_index_type(index_type: str | None, backend: str | None = None, *, stacklevel: int = 3) -> str:
    """The FAISS structure from ``index_type=`` (default ``"flat"``), or from the deprecated ``backend=``.

    ``backend`` used to name the FAISS structure; it now means the encoder runtime (``torch``, ``onnx``,
    ``onnx-int8``: ``load_encoder(backend=...)``), so ``backend="ivf"`` still works with a
    :class:`DeprecationWarning` and an encoder runtime given here is refused with what to pass instead.

    Raises:
        EmbedkitError: an unknown index type, an encoder runtime, or two different values.
    """
    if backend is not None:
        if backend in _ENCODER_BACKENDS:
            raise EmbedkitError(f"backend={backend!r} is an encoder runtime, not an index structure: load the model "
                                f"with load_encoder(..., backend={backend!r}), pass it as model=, and choose the "
                                f"FAISS structure with index_type= ({', '.join(INDEX_TYPES)})")
        if index_type is not None and index_type != backend:
            raise EmbedkitError(f"index_type={index_type!r} and backend={backend!r} disagree; give index_type= only")
        warnings.warn("backend= is the old name of index_type= (the FAISS structure: flat, hnsw, ivf); "
                      "'backend' now names the encoder runtime", DeprecationWarning, stacklevel=stacklevel)
        index_type = backend
    index_type = "flat" if index_type is None else index_type
    if index_type not in INDEX_TYPES:
        raise EmbedkitError(f"unknown index_type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    return index_type
