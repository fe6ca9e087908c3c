"""Checks on what clients send, shared by every endpoint (and by the service for Python callers).

* :func:`parse_json_body` reads a request body strictly: UTF-8, valid JSON, at most
  :data:`MAX_JSON_DEPTH` levels deep (else ``400 malformed_json``), and every value one that JSON
  and UTF-8 can carry back out: finite numbers only (no ``NaN``, ``Infinity``, ``1e999``), whole
  numbers of at most :data:`MAX_INT_DIGITS` digits, no lone surrogates (``"\\ud800"``) in strings or
  keys (else ``422 invalid_request`` naming the field, e.g. ``documents[0].metadata.score``).
* :func:`check_documents` applies the same value rules to documents given to
  :meth:`~embedkit.serve.service.SearchService.add_documents`, and refuses ids with control
  characters (``/api/documents/{id}`` could not reach them reliably, and they garble logs).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, NamedTuple

from embedkit.errors import EmbedkitError

__all__ = ["MAX_JSON_DEPTH", "MAX_INT_DIGITS", "InputError", "Problem", "parse_json_body", "find_problem",
           "check_documents", "field_name"]

#: deepest nesting of arrays/objects accepted in a request body
MAX_JSON_DEPTH = 64
#: longest whole number accepted (Python's own limit for converting text to int)
MAX_INT_DIGITS = 4300

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class InputError(Exception):
    """A request that is refused before any endpoint runs: ``status``, ``code``, one-line ``message``, ``field``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class Problem(NamedTuple):
    """A value JSON cannot carry faithfully: where it is and what is wrong (``too_deep``: nesting)."""

    field: str
    message: str
    too_deep: bool = False


class _Unrepresentable:
    """What the strict parser leaves where the body had a number no JSON number can carry."""

    __slots__ = ("text", "why")

    def __init__(self, text: str, why: str):
        self.text, self.why = text, why


def _parse_constant(s: str) -> _Unrepresentable:
    return _Unrepresentable(s, "is not a JSON number; send a finite number (or null)")


def _parse_float(s: str):
    v = float(s)
    if math.isfinite(v):
        return v
    shown = s if len(s) <= 24 else s[:20] + "..."
    return _Unrepresentable(shown, "is out of range for a 64-bit float; send a finite number")


def _parse_int(s: str):
    digits = len(s) - s.startswith("-")
    if digits > MAX_INT_DIGITS:
        return _Unrepresentable(f"a whole number of {digits} digits", f"is too long (at most {MAX_INT_DIGITS} digits)")
    return int(s)


def field_name(parent: str, key: Any) -> str:
    """``parent.key`` / ``parent[3]`` / ``parent["odd key"]`` (ASCII-escaped, so it is always printable)."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = str(key)
    if _IDENT.match(key):
        return f"{parent}.{key}" if parent else key
    shown = json.dumps(key[:40] + ("..." if len(key) > 40 else ""))
    return f"{parent}[{shown}]"


def _surrogate(s: str) -> str | None:
    try:
        s.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate (U+{ord(s[e.start]):04X} at character {e.start}); send valid Unicode text"


def find_problem(value: Any, field: str = "", *, max_depth: int | None = None) -> Problem | None:
    """The first value (in document order) under ``value`` that JSON/UTF-8 cannot carry, or None.

    Checks strings and object keys (lone surrogates), floats (NaN, infinities), what
    :func:`parse_json_body` marked as unrepresentable, and (with ``max_depth``) the nesting depth.
    Other types are left to the caller's own validation.
    """
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        v, where, depth = stack.pop()
        if isinstance(v, str):
            why = _surrogate(v)
            if why:
                return Problem(where or "body", why)
        elif isinstance(v, _Unrepresentable):
            return Problem(where or "body", f"{v.text} {v.why}")
        elif isinstance(v, float):
            if not math.isfinite(v):
                return Problem(where or "body", f"{v!r} is not a JSON number; use a finite number (or None)")
        elif isinstance(v, (dict, list, tuple)):
            if max_depth is not None and depth >= max_depth:
                return Problem(where or "body", f"nests deeper than {max_depth} levels", too_deep=True)
            items = list(v.items()) if isinstance(v, dict) else list(enumerate(v))
            for k, x in reversed(items):
                name = field_name(where, k)
                if isinstance(k, str):
                    why = _surrogate(k)
                    if why:
                        return Problem(name, f"the key {why}")
                stack.append((x, name, depth + 1))
    return None


#: a number that may overflow a float or exceed MAX_INT_DIGITS: only then are the (slower) hooks used
_RISKY_NUMBER = re.compile(r"[0-9]{300}|[eE][+-]?0*[1-9][0-9]{2}")
#: the only way a lone surrogate gets into a strictly decoded UTF-8 body: a \\uD800-\\uDFFF escape
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _max_depth(body: bytes) -> int:
    """How deeply the arrays/objects of a valid JSON text nest, at C speed (numpy).

    A quote preceded by an odd run of backslashes is escaped; the others open and close strings, and
    brackets inside strings do not count.
    """
    import numpy as np

    a = np.frombuffer(body, dtype=np.uint8)
    if not len(a):
        return 0
    backslash = a == 0x5C
    count = np.cumsum(backslash, dtype=np.int32)
    run = count - np.maximum.accumulate(np.where(backslash, 0, count))  # backslashes ending at each byte
    before = np.concatenate((np.zeros(1, np.int32), run[:-1]))
    quote = (a == 0x22) & (before % 2 == 0)
    inside = (np.cumsum(quote, dtype=np.int32) % 2).astype(bool)
    step = ((a == 0x5B) | (a == 0x7B)).astype(np.int32) - ((a == 0x5D) | (a == 0x7D))
    step[inside] = 0
    return int(np.cumsum(step).max())


def parse_json_body(body: bytes) -> Any:
    """A request body as JSON, strictly (see the module docstring).

    The common case adds a few C-speed scans of the body to ``json.loads``; the parsed value is
    walked in Python only when a scan or a parser hook found something, to name its field.

    Raises:
        InputError: 400 ``malformed_json`` (not UTF-8, not JSON, nested too deeply) or 422
            ``invalid_request`` naming the field whose value JSON cannot carry.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(400, "malformed_json", f"the request body is not UTF-8 (byte {e.start}: {e.reason}); "
                                                "send JSON encoded as UTF-8") from None
    found: list[_Unrepresentable] = []

    def flag(value):
        if isinstance(value, _Unrepresentable):
            found.append(value)
        return value

    hooks: dict[str, Any] = {"parse_constant": lambda s: flag(_parse_constant(s))}
    if _RISKY_NUMBER.search(text):
        hooks.update(parse_float=lambda s: flag(_parse_float(s)), parse_int=lambda s: flag(_parse_int(s)))
    try:
        obj = json.loads(text, **hooks)
    except json.JSONDecodeError as e:
        raise InputError(400, "malformed_json", f"the request body is not valid JSON ({e.msg} at position {e.pos})") \
            from None
    except RecursionError:
        raise InputError(400, "malformed_json", f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    suspect = bool(found) or _SURROGATE_ESCAPE.search(text) is not None or (
        body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _max_depth(body) > MAX_JSON_DEPTH)
    problem = find_problem(obj, max_depth=MAX_JSON_DEPTH) if suspect else None
    if problem is not None:
        if problem.too_deep:
            raise InputError(400, "malformed_json",
                             f"the request body nests deeper than {MAX_JSON_DEPTH} levels (at {problem.field})",
                             problem.field)
        raise InputError(422, "invalid_request", f"{problem.field}: {problem.message}", problem.field)
    return obj


def _control_char(s: str) -> str | None:
    for i, ch in enumerate(s):
        if unicodedata.category(ch) == "Cc":
            return f"U+{ord(ch):04X} at character {i}"
    return None


def check_documents(ids: Sequence[Any], texts: Sequence[Any], metadata: Sequence[Any]) -> None:
    """Refuse documents whose values JSON/UTF-8 cannot carry, and ids with control characters.

    Raises:
        EmbedkitError: naming the field, e.g. ``documents[2].metadata.score: nan is not a JSON number``.
    """
    for i, (did, text, meta) in enumerate(zip(ids, texts, metadata)):
        where = f"documents[{i}]"
        if isinstance(did, str):
            bad = _control_char(did)
            if bad:
                raise EmbedkitError(f"{where}.id {did!r} contains a control character ({bad}); ids must be printable "
                                    "text (so that /api/documents/{id} can reach them)")
        for name, value in (("id", did), ("text", text), ("metadata", meta)):
            problem = find_problem(value, f"{where}.{name}")
            if problem is not None:
                raise EmbedkitError(f"{problem.field}: {problem.message}")
