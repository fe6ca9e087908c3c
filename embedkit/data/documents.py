"""Validate a batch of documents (texts, ids, metadata) before anything is encoded or indexed.

One place for the rules every index and corpus consumer applies: texts are strings, ids are unique
and non-empty, metadata are JSON-encodable dicts, and *blank* documents (empty, whitespace, zero-width
characters or control characters only) are either skipped with a warning or refused.
"""

from __future__ import annotations

import collections
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from embedkit.data.texts import is_blank
from embedkit.errors import EmbedkitError

__all__ = ["ValidDocuments", "validate_documents", "MAX_LISTED_IDS"]

logger = logging.getLogger(__name__)

#: how many skipped ids a warning (and an index manifest) lists; the count is always exact
MAX_LISTED_IDS = 1000

_ON_EMPTY = ("skip", "error")


@dataclass
class ValidDocuments:
    """The documents that passed :func:`validate_documents`.

    Attributes:
        texts, ids, metadata: the kept documents, in input order (metadata entries are dicts or None).
        positions: each kept document's position in the input (to select rows of precomputed embeddings).
        skipped_ids: ids of the blank documents that were skipped (``on_empty="skip"``).
    """

    texts: list[str]
    ids: list[str]
    metadata: list[dict[str, Any] | None]
    positions: list[int]
    skipped_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def _id_text(value, i: int) -> str:
    if isinstance(value, str):
        s = value
    elif hasattr(value, "__index__") and not isinstance(value, bool):
        s = str(int(value))
    else:
        raise EmbedkitError(f"document {i} has id {value!r}; ids must be strings (or whole numbers)")
    if not s.strip():
        raise EmbedkitError(f"document {i} has an empty id; give every document a non-empty id")
    return s


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_metadata(m, i: int, did: str) -> None:
    if m is None:
        return
    if not isinstance(m, dict):
        raise EmbedkitError(f"metadata of document {i} (id {did!r}) must be a dict or None, got {type(m).__name__}")
    try:
        # strict JSON: NaN/inf are not JSON, and a lone surrogate cannot be written as UTF-8
        json.dumps(m, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as e:
        bad = next((k for k, v in m.items() if not _encodable(k) or not _encodable(v)), None)
        where = f" (key {bad!r})" if bad is not None else ""
        raise EmbedkitError(
            f"metadata of document {i} (id {did!r}){where} cannot be stored as JSON ({str(e).splitlines()[0]}); "
            "use strings, numbers, booleans, lists and dicts (e.g. a date as an ISO string)"
        ) from None


def _encodable(v) -> bool:
    try:
        json.dumps(v, allow_nan=False, ensure_ascii=False).encode("utf-8")
        return True
    except (TypeError, ValueError, RecursionError):
        return False


def validate_documents(texts: Sequence[str], ids: Sequence[str] | None = None,
                       metadata: Sequence[dict | None] | None = None, *, on_empty: str = "skip",
                       id_start: int = 0) -> ValidDocuments:
    """Check a batch of documents; skip (or refuse) blank ones.

    Args:
        texts: the document texts (a list, not a single string).
        ids: one id per text (strings, or whole numbers turned into strings); ``None`` numbers the
            documents ``id_start``, ``id_start + 1``, ... by their position in ``texts``.
        metadata: one dict (JSON-encodable) or ``None`` per text; ``None`` for no metadata at all.
        on_empty: ``"skip"`` drops blank documents (see :func:`embedkit.data.texts.is_blank`) with a warning naming how
            many and which ids; ``"error"`` refuses the batch at the first one.
        id_start: first number of generated ids.

    Returns:
        :class:`ValidDocuments` with the kept documents, their input positions and the skipped ids.

    Raises:
        EmbedkitError: not a list, no documents (or only blank ones), a non-text document, a missing,
            empty or duplicate id, ids/metadata of another length, metadata that is not a dict or
            cannot be stored as JSON, a blank document with ``on_empty="error"``.

    Example:
        >>> docs = validate_documents(["a cat", "  ", "a dog"], ["c", "blank", "d"])
        >>> docs.ids, docs.positions, docs.skipped_ids
        (['c', 'd'], [0, 2], ['blank'])
    """
    if on_empty not in _ON_EMPTY:
        raise EmbedkitError(f"on_empty must be 'skip' or 'error', got {on_empty!r}")
    if isinstance(texts, (str, bytes)):
        raise EmbedkitError("expected a list of documents, got a single string")
    texts = list(texts)
    if not texts:
        raise EmbedkitError("the corpus is empty: give at least one document")
    if ids is None:
        ids = [str(id_start + i) for i in range(len(texts))]
    elif isinstance(ids, (str, bytes)):
        raise EmbedkitError("expected a list of ids, got a single string")
    ids = [_id_text(v, i) for i, v in enumerate(ids)]
    if len(ids) != len(texts):
        raise EmbedkitError(f"got {len(ids)} ids for {len(texts)} documents")
    dupes = [d for d, c in collections.Counter(ids).items() if c > 1]
    if dupes:
        raise EmbedkitError(f"duplicate document ids: {', '.join(map(repr, dupes[:5]))}")
    metadata = [None] * len(texts) if metadata is None else list(metadata)
    if len(metadata) != len(texts):
        raise EmbedkitError(f"got {len(metadata)} metadata entries for {len(texts)} documents")
    out = ValidDocuments([], [], [], [])
    for i, (did, t, m) in enumerate(zip(ids, texts, metadata)):
        if not isinstance(t, str):
            raise EmbedkitError(f"document {i} (id {did!r}) is {type(t).__name__}, expected text")
        for what, value in (("id", did), ("text", t)):
            if not value.isascii() and _SURROGATE.search(value):
                raise EmbedkitError(f"document {i} (id {did!r}): its {what} holds a lone surrogate (e.g. '\\ud800'), "
                                    "which is not text and cannot be stored as UTF-8; fix the input's encoding")
        _check_metadata(m, i, did)
        if is_blank(t):
            if on_empty == "error":
                raise EmbedkitError(
                    f"document {i} (id {did!r}) is empty or whitespace-only; remove it, or skip such documents "
                    "(on_empty='skip', the default; --strict turns this refusal on)")
            out.skipped_ids.append(did)
            continue
        out.texts.append(t)
        out.ids.append(did)
        out.metadata.append(m)
        out.positions.append(i)
    if not out.texts:
        raise EmbedkitError(f"the corpus is empty: all {len(texts)} documents are empty or whitespace-only")
    if out.skipped_ids:
        n = len(out.skipped_ids)
        shown = ", ".join(map(repr, out.skipped_ids[:20])) + (f", ... ({n - 20} more)" if n > 20 else "")
        logger.warning("skipped %d empty or whitespace-only document%s (ids: %s)", n, "" if n == 1 else "s", shown)
    return out
