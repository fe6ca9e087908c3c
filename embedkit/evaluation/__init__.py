"""Evaluation: STS and retrieval scores, local files as mteb tasks, suites over compression specs.

Names are imported lazily (``import embedkit.evaluation`` does not import mteb or torch).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate_sts": "embedkit.evaluation.sts",
    "spearman_cosine": "embedkit.evaluation.sts",
    "evaluate_index": "embedkit.evaluation.retrieval",
    "sts_task": "embedkit.evaluation.mteb_tasks",
    "retrieval_task": "embedkit.evaluation.mteb_tasks",
    "classification_task": "embedkit.evaluation.mteb_tasks",
    "clustering_task": "embedkit.evaluation.mteb_tasks",
    "resolve_mteb_tasks": "embedkit.evaluation.mteb_tasks",
    "check_hub_available": "embedkit.evaluation.mteb_tasks",
    "parse_specs": "embedkit.evaluation.suite",
    "run_suite": "embedkit.evaluation.suite",
    "summary_markdown": "embedkit.evaluation.suite",
    "write_outputs": "embedkit.evaluation.suite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
