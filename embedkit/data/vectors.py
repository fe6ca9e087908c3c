"""Word vectors in word2vec format (text or binary), read with gensim."""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

from embedkit.errors import DataFormatError

__all__ = ["load_vectors"]

logger = logging.getLogger(__name__)


def load_vectors(path: str | os.PathLike, *, binary: bool | None = None):
    """Load word vectors in word2vec format as gensim ``KeyedVectors``.

    Args:
        path: the file (``.gz``/``.bz2`` compressed too, as gensim reads them).
        binary: the binary format; ``None`` (default) decides by the suffix (``.bin`` or
            ``.bin.gz`` = binary, anything else = text).

    Raises:
        DataFormatError: a missing file, or one that is not a word2vec file of that format
            (bad header, wrong counts, truncated, invalid UTF-8), or vectors with NaN or inf.
    """
    import numpy as np
    from gensim.models import KeyedVectors

    p = Path(path)
    if not p.exists():
        raise DataFormatError(f"{p}: file not found")
    if p.is_dir():
        raise DataFormatError(f"{p}: is a folder, expected a word2vec file")
    if binary is None:
        binary = p.name.endswith((".bin", ".bin.gz", ".bin.bz2"))
    kind = "binary" if binary else "text"
    try:
        kv = KeyedVectors.load_word2vec_format(str(p), binary=binary)
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{p}: not a word2vec {kind} file (not valid UTF-8: {e.reason})") from None
    except (ValueError, EOFError, IndexError, zlib.error, OSError) as e:
        raise DataFormatError(f"{p}: not a word2vec {kind} file ({e})") from None
    if len(kv.index_to_key) == 0:
        raise DataFormatError(f"{p}: holds no vectors")
    finite = np.isfinite(kv.vectors).all(axis=1)
    if not finite.all():
        word = kv.index_to_key[int(np.argmin(finite))]
        raise DataFormatError(f"{p}: the vector of {word!r} holds NaN or inf")
    return kv
