"""Checks on texts before they reach a tokenizer: emptiness and length.

A text counts as *empty* when nothing in it survives a tokenizer's cleaning: only whitespace, control
characters (NUL, ...) and invisible format characters (zero-width space U+200B, zero-width
non-joiner/joiner U+200C/U+200D, word joiner U+2060, byte-order mark U+FEFF, ...). Such a text would
be encoded as the embedding of nothing.

Very long texts are cut to :data:`MAX_TEXT_CHARS` characters before tokenizing: every model truncates
to its token window (a few hundred to a few thousand tokens) anyway, but a fast tokenizer first
tokenizes the *whole* string — a 50 MB single-line document costs about 6 GB of memory and 100 s.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

from embedkit.errors import EmbedkitError

__all__ = ["MAX_TEXT_CHARS", "check_texts", "cut_texts", "is_blank"]

logger = logging.getLogger(__name__)

#: Texts longer than this many characters are cut to it before tokenizing. It is far above the token
#: window of any sentence encoder (a 8192-token window holds about 40,000 characters of English, and
#: never more than 8192 characters of one-character tokens), so cutting never changes an embedding;
#: it only bounds the tokenizer's memory and time.
MAX_TEXT_CHARS = 100_000


def _invisible(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf")


def is_blank(text: str) -> bool:
    """True if ``text`` holds nothing a tokenizer keeps: only whitespace, control or zero-width characters.

    >>> is_blank(" \\u200b\\ufeff\\x00 "), is_blank("a\\u200b")
    (True, False)
    """
    s = text.strip()
    if not s:
        return True
    if not _invisible(s[0]):
        return False
    return all(_invisible(ch) for ch in s)


def check_texts(texts: Sequence[str], what: str = "text") -> None:
    """Refuse anything but a sequence of non-empty strings.

    Args:
        texts: the texts to check (a list, tuple, ...; a single ``str`` is refused).
        what: the word used in messages (``"text"``, ``"document"``, ``"query"``).

    Raises:
        EmbedkitError: a single string instead of a list, a non-string item, or an empty item
            (see :func:`is_blank`); the message names the position.
    """
    if isinstance(texts, str):
        raise EmbedkitError(f"expected a list of {what}s, got a single string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise EmbedkitError(f"{what} {i} is {type(t).__name__}, expected str")
        if is_blank(t):
            raise EmbedkitError(f"{what} {i} is empty or whitespace-only (or only zero-width/control characters); "
                                "remove it or give it content")


def cut_texts(texts: Sequence[str], max_chars: int | None = MAX_TEXT_CHARS) -> tuple[list[str], int]:
    """Cut every text longer than ``max_chars`` characters to its first ``max_chars``.

    Args:
        texts: the texts.
        max_chars: the limit (default :data:`MAX_TEXT_CHARS`); ``None`` keeps every text whole.

    Returns:
        ``(texts, number of texts cut)``; the list is a new list, the strings that fit are shared.

    >>> cut_texts(["abcdef", "ab"], max_chars=3)
    (['abc', 'ab'], 1)
    """
    if max_chars is None:
        return list(texts), 0
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise EmbedkitError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    out = list(texts)
    n = 0
    for i, t in enumerate(out):
        if len(t) > max_chars:
            out[i] = t[:max_chars]
            n += 1
    return out, n
