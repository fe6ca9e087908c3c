"""Size each table method to a parameter budget given as a fraction of FullTables' parameters.

The reference is :class:`FullTables` with one ``embedding_dim``-wide row per known value plus
one out-of-vocabulary row per feature: ``full = sum_f (n_f + 1) * d``. For a fraction ``r`` the
budget is ``floor(r * full)`` trainable parameters (vocabulary buffers are not parameters).

* ``"hashing"``: water-filling. Every feature gets ``min(n_f + 1, c)`` rows with the largest cap
  ``c`` that fits; the rows left over go one each to the capped features in order. Small
  features keep a row per value; large ones share the rest equally.
* ``"qr"``: the same cap, in rows per feature; a capped feature takes the largest remainder count
  ``m`` whose two tables fit under the cap. A feature cannot go below ``~2 sqrt(n_f)`` rows, so
  tiny budgets may be exceeded: :attr:`TableBudget.over_budget` then says so.
* ``"unified"``: one shared table of ``floor(budget / chunk_dim)`` rows with
  ``chunk_dim = embedding_dim // num_chunks``; every feature gets ``num_chunks`` chunks, so each
  feature's output keeps ``embedding_dim`` dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from embedkit.errors import EmbedkitError

from ._vocab import vocabulary_tensor
from .base import CategoricalTables
from .full import FullTables
from .hashing import HashingTrick
from .qr import OPERATIONS, QRTrick, qr_parameters
from .unified import UnifiedEmbedding

METHODS = ("full", "hashing", "qr", "unified")


@dataclass(frozen=True)
class TableBudget:
    """The sizing of one method under a budget.

    Attributes:
        method: one of ``METHODS``.
        fraction: the requested fraction of the full tables' parameters.
        budget: ``floor(fraction * full_parameters)``.
        full_parameters: parameters of :class:`FullTables` on the same vocabularies.
        num_parameters: parameters of the module that :func:`tables_for_budget` builds.
        kwargs: the size arguments passed to the module's constructor.
    """

    method: str
    fraction: float
    budget: int
    full_parameters: int
    num_parameters: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def over_budget(self) -> bool:
        return self.num_parameters > self.budget


def full_parameters(cardinalities: Mapping[str, int], embedding_dim: int) -> int:
    """Parameters of :class:`FullTables`: ``sum_f (n_f + 1) * embedding_dim``."""
    return sum((int(n) + 1) * embedding_dim for n in cardinalities.values())


def _largest_cap(cost, lo: int, hi: int, limit: int) -> int:
    """Largest ``c`` in [lo, hi] with ``cost(c) <= limit`` (cost non-decreasing); ``lo`` if none."""
    if cost(lo) > limit:
        return lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _qr_remainders(rows: int, cap: int, d: int, operation: str) -> int:
    """Largest remainder count ``m`` whose QR tables fit in ``cap * d`` parameters (min-size if none)."""
    if rows <= cap:
        return rows
    m_min = math.isqrt(rows - 1) + 1  # ceil(sqrt(rows)): cost is non-decreasing above it
    m = _largest_cap(lambda m: qr_parameters(rows, m, d, operation), m_min, rows - 1, cap * d)
    # a table too small to shrink (e.g. gender) stays whole
    return rows if qr_parameters(rows, m, d, operation) >= rows * d else m


def plan_budget(
    method: str,
    cardinalities: Mapping[str, int],
    fraction: float,
    embedding_dim: int = 16,
    *,
    num_chunks: int = 2,
    num_tables: int = 1,
    operation: str = "mult",
) -> TableBudget:
    """Size ``method`` to ``fraction`` of the full tables' parameters.

    Args:
        method: ``"full"``, ``"hashing"``, ``"qr"`` or ``"unified"``.
        cardinalities: feature name -> number of known values ``n_f``.
        fraction: budget as a fraction of the full tables, in (0, 1] (``"full"`` needs 1).
        embedding_dim: output dimension of every feature.
        num_chunks: UnifiedEmbedding chunks per feature (must divide ``embedding_dim``).
        num_tables: UnifiedEmbedding backend tables.
        operation: QRTrick operation.

    Returns:
        A :class:`TableBudget`.

    Example:
        >>> plan = plan_budget("unified", {"user": 943, "item": 1682}, 0.25, embedding_dim=16)
        >>> plan.budget, plan.num_parameters, plan.kwargs["num_buckets"]
        (10508, 10504, 1313)
    """
    if method not in METHODS:
        raise EmbedkitError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise EmbedkitError(f"fraction must be in (0, 1], got {fraction!r}")
    if not cardinalities:
        raise EmbedkitError("cardinalities must name at least one feature")
    d = int(embedding_dim)
    rows = {f: int(n) + 1 for f, n in cardinalities.items()}
    full = full_parameters(cardinalities, d)
    budget = int(math.floor(fraction * full + 1e-9))

    def result(n_params: int, **kwargs: Any) -> TableBudget:
        return TableBudget(method, float(fraction), budget, full, int(n_params), kwargs)

    if method == "full":
        if fraction != 1:
            raise EmbedkitError(f"FullTables only exists at fraction 1, got {fraction}")
        return result(full, embedding_dim=d)

    if method == "unified":
        if num_chunks < 1 or d % num_chunks:
            raise EmbedkitError(f"num_chunks ({num_chunks}) must divide embedding_dim ({d})")
        chunk_dim = d // num_chunks
        buckets = max(budget // chunk_dim, num_tables)
        return result(buckets * chunk_dim, num_buckets=buckets, chunk_dim=chunk_dim, num_chunks=num_chunks,
                      num_tables=num_tables)

    row_budget = budget // d
    top = max(rows.values())
    if method == "hashing":
        cap = _largest_cap(lambda c: sum(min(r, c) for r in rows.values()), 1, top, row_budget)
        alloc = {f: min(r, cap) for f, r in rows.items()}
        spare = row_budget - sum(alloc.values())
        for f in rows:
            if spare <= 0:
                break
            if rows[f] > alloc[f]:
                alloc[f] += 1
                spare -= 1
        return result(sum(alloc.values()) * d, num_rows=alloc, embedding_dim=d)

    if operation not in OPERATIONS:
        raise EmbedkitError(f"operation must be one of {OPERATIONS}, got {operation!r}")

    def qr_total(c: int) -> int:
        return sum(qr_parameters(r, _qr_remainders(r, c, d, operation), d, operation) for r in rows.values())

    cap = _largest_cap(qr_total, 1, top, budget)
    m = {f: _qr_remainders(r, cap, d, operation) for f, r in rows.items()}
    return result(qr_total(cap), num_remainders=m, embedding_dim=d, operation=operation)


def tables_for_budget(
    method: str,
    vocabularies: Mapping[str, Any],
    fraction: float,
    embedding_dim: int = 16,
    *,
    seed: int = 0,
    pooling: str = "mean",
    num_chunks: int = 2,
    num_tables: int = 1,
    operation: str = "mult",
    **kwargs: Any,
) -> CategoricalTables:
    """Build ``method``'s module sized by :func:`plan_budget` on the vocabularies' sizes.

    Args:
        method: ``"full"``, ``"hashing"``, ``"qr"`` or ``"unified"``.
        vocabularies: feature name -> known ids (e.g. every value in the training set).
        fraction: budget as a fraction of the full tables' parameters.
        embedding_dim: output dimension of every feature.
        seed: hash seed (hashing, unified); weights follow torch's global RNG.
        pooling: ``"sum"`` or ``"mean"`` for multi-valued features.
        num_chunks, num_tables, operation: see :func:`plan_budget`.
        **kwargs: passed to the constructor (e.g. ``init_std``, ``padding_value``).

    Example:
        >>> import torch
        >>> vocab = {"user": torch.arange(943), "item": torch.arange(1682)}
        >>> tables = tables_for_budget("hashing", vocab, 0.25, embedding_dim=16)
        >>> tables.num_parameters() == plan_budget("hashing", {"user": 943, "item": 1682}, 0.25).num_parameters
        True
    """
    vocab = {f: vocabulary_tensor(f, v) for f, v in vocabularies.items()}
    plan = plan_budget(method, {f: v.numel() for f, v in vocab.items()}, fraction, embedding_dim,
                       num_chunks=num_chunks, num_tables=num_tables, operation=operation)
    common = dict(pooling=pooling, **kwargs)
    if method == "full":
        return FullTables(vocab, **plan.kwargs, **common)
    if method == "qr":
        return QRTrick(vocab, **plan.kwargs, **common)
    if method == "hashing":
        return HashingTrick(list(vocab), seed=seed, **plan.kwargs, **common)
    return UnifiedEmbedding(list(vocab), seed=seed, **plan.kwargs, **common)
