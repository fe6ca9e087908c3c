"""Metadata filters: the one parser of the filter language, its SQL compiler, and filtered FAISS search.

The language (``where=`` in Python, ``--where`` on the command line, ``where`` in the JSON API) is a
JSON object over the documents' metadata fields, in MongoDB's spelling::

    {"year": 2021}                                  equality (same as {"year": {"$eq": 2021}})
    {"year": {"$gte": 2019, "$lt": 2023}}           ranges: $gt $gte $lt $lte (numbers or strings)
    {"lang": {"$in": ["en", "de"]}}                 $in / $nin: one of a list of values
    {"lang": {"$ne": "fr"}}                         $ne
    {"journal": {"$exists": true}}                  the field is present (any value)
    {"$or": [{"lang": "en"}, {"year": {"$gte": 2020}}]}   $and / $or over lists of filters;
                                                    several fields in one object are ANDed
    {"source.site": "arxiv"}                        a dotted name reads a nested object

Values are JSON scalars: strings, numbers and booleans (``null`` is not a value: use ``$exists``).
Comparisons only match documents that hold the field (``$ne``/``$nin`` included).

Everything is checked in :func:`parse_where` before any search: an unknown operator, a field name
that is not ``[A-Za-z_][A-Za-z0-9_]*`` (dots between parts), a field no document has, or a value of
another type than the field's (a string against a numeric field) is refused with one line. The
compiled SQL (:class:`Filter`) is built from fixed fragments and ``?`` placeholders only; field
paths and values travel as parameters (``json_extract(metadata, ?)``), so nothing a user writes is
ever part of the SQL text.

Filtered dense search passes the allowed rows to FAISS as an ``IDSelectorBatch`` inside the search
parameters (flat, IVF, HNSW, binary flat/HNSW), raising ``nprobe`` / ``efSearch`` by the inverse of
the filter's selectivity; indexes whose search takes no selector (binary IVF, BEBR's own search)
over-fetch and filter instead.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

from embedkit.compression.base import faiss_scores
from embedkit.errors import EmbedkitError

__all__ = ["Filter", "boosted_effort", "field_types", "filtered_code_search", "filtered_faiss_search", "parse_where"]

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_COMPARE = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = (*_COMPARE, "$in", "$nin", "$exists")
#: filter nesting and size limits (a filter is a few conditions, not a program)
MAX_DEPTH = 8
MAX_VALUES = 10_000
_NUMERIC = {"integer", "real"}


@dataclass(frozen=True)
class Filter:
    """A checked filter compiled to an SQL condition over ``docs`` (``sql``) and its parameters."""

    sql: str
    params: tuple
    source: str

    def __str__(self) -> str:
        return self.source


def _kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise EmbedkitError(f"where: {value!r} is not a finite number")
        return "number"
    if isinstance(value, str):
        return "string"
    raise EmbedkitError(f"where: {json.dumps(value)[:60]} is not a string, number or boolean")


def _json_kinds(types: set[str]) -> set[str]:
    out = set()
    for t in types:
        out.add("number" if t in _NUMERIC else "boolean" if t in ("true", "false") else
                "string" if t == "text" else t)
    return out


def field_types(conn) -> dict[str, set[str]]:
    """``{field: {json types}}`` of every metadata field (nested objects give dotted names)."""
    rows = conn.execute(
        "SELECT DISTINCT substr(t.fullkey, 3), t.type FROM docs, json_tree(docs.metadata) AS t "
        "WHERE docs.metadata IS NOT NULL AND t.fullkey != '$' AND t.fullkey NOT LIKE '%[%'").fetchall()
    out: dict[str, set[str]] = {}
    for name, typ in rows:
        out.setdefault(name.replace('"', ""), set()).add(typ)
    return out


class _Compiler:
    def __init__(self, fields: dict[str, set[str]] | None):
        self.fields = fields
        self.params: list = []

    def where(self, node, depth: int = 0) -> str:
        if depth > MAX_DEPTH:
            raise EmbedkitError(f"where: nested more than {MAX_DEPTH} levels deep")
        if not isinstance(node, dict) or not node:
            raise EmbedkitError(f"where: expected a non-empty object of conditions, got {json.dumps(node)[:60]}")
        parts = []
        for key, value in node.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise EmbedkitError(f"where: {key} takes a non-empty list of filters")
                inner = [self.where(v, depth + 1) for v in value]
                parts.append("(" + (" AND " if key == "$and" else " OR ").join(inner) + ")")
            elif key.startswith("$"):
                raise EmbedkitError(f"where: unknown operator {key!r} at the top of a condition "
                                    f"(use $and, $or or a field name)")
            else:
                parts.append(self.field(key, value))
        return "(" + " AND ".join(parts) + ")"

    def _path(self, name: str) -> tuple[str, set[str]]:
        if not isinstance(name, str) or not _FIELD.match(name):
            raise EmbedkitError(f"where: {name!r} is not a field name (letters, digits and _, dots between parts)")
        kinds: set[str] = set()
        if self.fields is not None:
            if name not in self.fields:
                known = ", ".join(sorted(self.fields)[:10]) or "none: the documents have no metadata"
                raise EmbedkitError(f"where: unknown field {name!r} (metadata fields: {known})")
            kinds = _json_kinds(self.fields[name])
        return "$." + name, kinds

    def _value(self, name: str, value, kinds: set[str], op: str):
        kind = _kind(value)
        if kinds and kind not in kinds:
            have = "/".join(sorted(k for k in kinds if k not in ("null", "object", "array"))) or "objects"
            raise EmbedkitError(f"where: field {name!r} holds {have} values; {op} got the {kind} {json.dumps(value)}")
        if op in ("$gt", "$gte", "$lt", "$lte") and kind == "boolean":
            raise EmbedkitError(f"where: {op} on {name!r} needs a number or a string, not {json.dumps(value)}")
        self.params.append(int(value) if kind == "boolean" else value)

    def field(self, name: str, cond) -> str:
        path, kinds = self._path(name)
        if not (isinstance(cond, dict) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond)):
            if isinstance(cond, dict):
                raise EmbedkitError(f"where: {name!r} takes a value or an object of operators "
                                    f"({', '.join(_OPERATORS)})")
            cond = {"$eq": cond}
        parts = []
        for op, value in cond.items():
            if op == "$exists":
                if not isinstance(value, bool):
                    raise EmbedkitError(f"where: $exists on {name!r} takes true or false")
                self.params.append(path)
                parts.append(f"json_type(metadata, ?) IS {'NOT ' if value else ''}NULL")
                continue
            if op in _COMPARE:
                self.params.append(path)
                self._value(name, value, kinds, op)
                self.params.append(path)
                parts.append(f"(json_extract(metadata, ?) {_COMPARE[op]} ? AND json_type(metadata, ?) "
                             f"NOT IN ('object', 'array', 'null'))")
            elif op in ("$in", "$nin"):
                if not isinstance(value, list) or not value or len(value) > MAX_VALUES:
                    raise EmbedkitError(f"where: {op} on {name!r} takes a non-empty list of at most {MAX_VALUES} values")
                self.params.append(path)
                for v in value:
                    self._value(name, v, kinds, op)
                self.params.append(path)
                marks = ", ".join("?" * len(value))
                parts.append(f"(json_extract(metadata, ?) {'NOT ' if op == '$nin' else ''}IN ({marks}) "
                             f"AND json_type(metadata, ?) NOT IN ('object', 'array', 'null'))")
            else:
                raise EmbedkitError(f"where: unknown operator {op!r} on {name!r} (use {', '.join(_OPERATORS)})")
        return "(" + " AND ".join(parts) + ")"


def parse_where(where, fields: dict[str, set[str]] | None = None) -> Filter | None:
    """Check a filter (a dict, or its JSON text) and compile it; ``None``/``{}``/``""`` mean no filter.

    Args:
        where: the filter (see the module docstring).
        fields: ``{field: types}`` of the index (:func:`field_types`); ``None`` skips the field and
            type checks (used for the syntax check before an index is loaded).

    Raises:
        EmbedkitError: bad JSON, an unknown operator or field, a value of the wrong type (one line,
            starting with ``where:``).
    """
    if where is None or (isinstance(where, (str, dict)) and not where):
        return None
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except (ValueError, RecursionError) as e:
            raise EmbedkitError(f"where: not valid JSON ({str(e).splitlines()[0][:80]}); e.g. "
                                '\'{"year": {"$gte": 2020}}\'') from None
    if not isinstance(where, dict):
        raise EmbedkitError(f"where: expected a JSON object of conditions, got {json.dumps(where)[:60]}")
    compiler = _Compiler(fields)
    sql = compiler.where(where)
    return Filter(sql, tuple(compiler.params), json.dumps(where, sort_keys=True))


# -- filtered FAISS search -----------------------------------------------------------------------
def _params(index, backend: str, sel, nprobe: int | None, ef_search: int | None):
    import faiss

    if backend == "ivf":
        from embedkit.compression.base import ivf_of

        ivf = ivf_of(index)
        return faiss.SearchParametersIVF(sel=sel, nprobe=int(min(nprobe or ivf.nprobe, ivf.nlist)))
    if backend == "hnsw":
        return faiss.SearchParametersHNSW(sel=sel, efSearch=int(ef_search or 64))
    return faiss.SearchParameters(sel=sel)


def boosted_effort(n_allowed: int, ntotal: int, k: int, nprobe: int | None, ef_search: int | None, nlist: int | None):
    """``(nprobe, ef_search)`` raised by the inverse selectivity of a filter (capped at the index size)."""
    s = max(n_allowed, 1) / max(ntotal, 1)
    probe = None if nprobe is None else min(int(nlist or nprobe), math.ceil(nprobe / s))
    ef = None if ef_search is None else min(max(ntotal, k), max(k, math.ceil(max(ef_search, k) / s)))
    return probe, ef


def filtered_faiss_search(index, X: np.ndarray, k: int, allowed: np.ndarray, *, backend: str,
                          nprobe: int | None = None, ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """FAISS ``(distances, labels)`` of the ``k`` best among the labels ``allowed`` (sorted int64).

    The labels go to FAISS as an ``IDSelectorBatch``; ``nprobe`` / ``ef_search`` are raised for
    selective filters. An index whose search refuses a selector is searched deeper and its results
    filtered (every label when the filter is very selective).
    """
    import faiss

    from embedkit.compression.base import ivf_of, single_thread_for_small_batches

    ntotal = int(index.ntotal)
    nlist = None
    if backend == "ivf":
        ivf = ivf_of(index)
        nlist = int(ivf.nlist)
        nprobe = nprobe or int(ivf.nprobe)
    probe, ef = boosted_effort(len(allowed), ntotal, k, nprobe, ef_search, nlist)
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    with single_thread_for_small_batches(len(X)):
        try:
            return index.search(X, k, params=_params(index, backend, sel, probe, ef))
        except RuntimeError:
            pass  # no selector support (binary IVF, PQ): over-fetch and filter
        before = int(ivf.nprobe) if backend == "ivf" else None
        try:
            if backend == "ivf":
                ivf.nprobe = int(probe)
            return overfetch(lambda deep: index.search(X, deep), ntotal, k, allowed)
        finally:
            if before is not None:
                ivf.nprobe = before


def overfetch(search, ntotal: int, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``search(depth) -> (scores or distances, labels)`` fetched deep enough to hold ``k`` of the labels
    ``allowed`` per query (about ``2k / selectivity``, every label if that is not enough); the first
    ``k`` allowed entries of each row, in the search's order, padded with label -1."""
    deep = min(ntotal, max(k, math.ceil(2 * k * ntotal / max(len(allowed), 1))))
    while True:
        D, labels = search(deep)
        keep = np.isin(labels, allowed)
        if deep >= ntotal or (keep.sum(axis=1) >= min(k, len(allowed))).all():
            return compact_rows(D, labels, keep, k)
        deep = ntotal


def filtered_code_search(code_index, Qt: np.ndarray, k: int, rows: np.ndarray, *, nprobe: int | None = None,
                         ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, rows)`` of a :class:`~embedkit.compression.base.CodeIndex` restricted to ``rows``.

    A FAISS-held index searches through :func:`filtered_faiss_search`; any other (BEBR's own search)
    over-fetches and filters.
    """
    index = getattr(code_index, "index", None)
    if index is not None and hasattr(code_index, "to_input"):
        D, labels = filtered_faiss_search(index, code_index.to_input(Qt), k, rows, backend=code_index.backend,
                                          nprobe=nprobe, ef_search=ef_search)
        scores = faiss_scores(D, code_index.binary, code_index.nbits)
        return np.where(labels >= 0, scores, -np.inf).astype(np.float32), labels.astype(np.int64)
    scores, labels = overfetch(lambda deep: code_index.search(Qt, deep), int(code_index.ntotal), k, rows)
    return np.where(labels >= 0, scores, -np.inf).astype(np.float32), labels


def compact_rows(D: np.ndarray, labels: np.ndarray, keep: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` kept entries of each row (order kept), padded with label -1."""
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    D2 = np.take_along_axis(D, order, 1)
    L2 = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(labels, order, 1), -1)
    if L2.shape[1] < k:
        pad = k - L2.shape[1]
        L2 = np.pad(L2, ((0, 0), (0, pad)), constant_values=-1)
        D2 = np.pad(D2, ((0, 0), (0, pad)))
    return D2, L2
