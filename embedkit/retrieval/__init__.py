"""Retrieval: the persistent compressed index, its docstore, manifest and metrics.

One contract (:class:`IndexBase`, ``base.py``), two storage formats: :class:`EmbeddingIndex` (in memory,
``index.py``; its ``load`` opens either format) and :class:`DiskIndex` (segments on disk, ``ondisk.py``
over ``segments.py`` and ``lists.py``; also built from embedding shards by :func:`build_index_from_shards`).
Shared below both: ``common.py`` (search-effort defaults, :class:`Hit`, id checks), ``manifest.py``,
``docstore.py``, ``locking.py``.

Names are imported lazily, so ``import embedkit.retrieval.metrics`` stays light.
"""

from __future__ import annotations

_LAZY = {
    "EmbeddingIndex": "embedkit.retrieval.index",
    "Hit": "embedkit.retrieval.common",
    "IndexBase": "embedkit.retrieval.base",
    "directory_size": "embedkit.retrieval.manifest",
    "read_manifest": "embedkit.retrieval.manifest",
    "DiskIndex": "embedkit.retrieval.ondisk",
    "build_index_from_shards": "embedkit.retrieval.sharded",
    "default_nprobe": "embedkit.retrieval.common",
    "DEFAULT_EF_SEARCH": "embedkit.retrieval.common",
    "DocStore": "embedkit.retrieval.docstore",
    "ReadWriteLock": "embedkit.retrieval.locking",
    "retrieval_scores": "embedkit.retrieval.metrics",
    "ndcg_at_k": "embedkit.retrieval.metrics",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedkit.retrieval' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
