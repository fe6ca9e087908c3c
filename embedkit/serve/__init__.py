"""``embedkit serve``: an index behind an HTTP JSON API and a search page.

Durable writes (an fsync'ed write log beside the index, replayed over the last snapshot), concurrent
searches with dynamic query batching, bearer-token auth for writes, limits with JSON errors.
Needs the ``serve`` extra (FastAPI, uvicorn); see docs/serving.md.

Names are imported lazily: ``import embedkit.serve`` does not import FastAPI or torch.
"""

from __future__ import annotations

_LAZY = {
    "create_app": "embedkit.serve.app",
    "SearchService": "embedkit.serve.service",
    "ServeConfig": "embedkit.serve.config",
    "QueryBatcher": "embedkit.serve.batching",
    "WriteLog": "embedkit.serve.writelog",
    "log_path_for": "embedkit.serve.writelog",
    "Metrics": "embedkit.serve.metrics",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'embedkit.serve' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
