"""Opening input files: plain or gzip-compressed UTF-8 text, JSON Lines and TSV rows.

Every reader in :mod:`embedkit.data` goes through :func:`open_text`, so all of them share one set of
one-line errors (:class:`~embedkit.errors.DataFormatError`) for unreadable input:

* invalid UTF-8, with the line and the byte offset *in the file* (in the decompressed data for
  ``.gz``), e.g. ``corpus.jsonl:812: not valid UTF-8 (invalid start byte at byte 100000)``;
* a corrupt gzip file (bad header, bad CRC, damaged deflate data) or a truncated one.

Files are recognised as gzip by their ``.gz`` suffix or by the gzip magic bytes. A UTF-8 byte-order
mark at the start of a file is skipped.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from embedkit.errors import DataFormatError

__all__ = ["open_text", "iter_jsonl", "iter_tsv_rows", "TextFile"]

logger = logging.getLogger(__name__)

csv.field_size_limit(1 << 30)

_GZIP_MAGIC = b"\x1f\x8b"
_SCAN_CHUNK = 1 << 20


def _is_gzip(path: Path) -> bool:
    if path.suffix == ".gz":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(2) == _GZIP_MAGIC
    except OSError:
        return False


def _utf8_error_location(path: Path, gz: bool) -> tuple[int, int, str] | None:
    """(1-based line, byte offset, reason) of the first invalid UTF-8 sequence, found by rescanning."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    fed = 0  # bytes passed to the decoder so far
    newlines = 0  # newlines in the bytes the decoder has fully consumed
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        while True:
            chunk = f.read(_SCAN_CHUNK)
            final = not chunk
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk, final)
            except UnicodeDecodeError as e:
                data = pending + chunk
                offset = fed - len(pending) + e.start
                return newlines + data[: e.start].count(b"\n") + 1, offset, e.reason
            newlines += chunk.count(b"\n")
            fed += len(chunk)
            if final:
                return None


class TextFile:
    """A text file opened by :func:`open_text`: iterate it, ``read``/``readline`` it, use it in ``with``.

    Decoding and decompression errors surface as one-line :class:`~embedkit.errors.DataFormatError`
    naming the file (and the line and byte offset of invalid UTF-8).
    """

    def __init__(self, path: Path, gz: bool):
        self.path = path
        self.name = path.name
        self._gz = gz
        if gz:
            self._f = gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        else:
            self._f = open(path, encoding="utf-8-sig", newline="")

    def _translate(self, e: BaseException) -> DataFormatError:
        if isinstance(e, UnicodeDecodeError):
            where = None
            try:
                where = _utf8_error_location(self.path, self._gz)
            except (OSError, EOFError, zlib.error):
                pass
            if where is None:
                return DataFormatError(f"{self.name}: not valid UTF-8 ({e.reason}); save the file as UTF-8")
            line, offset, reason = where
            inside = " of the decompressed data" if self._gz else ""
            return DataFormatError(
                f"{self.name}:{line}: not valid UTF-8 ({reason} at byte {offset}{inside}); save the file as UTF-8")
        if isinstance(e, EOFError):
            return DataFormatError(f"{self.name}: the gzip file is truncated (ends before its end marker); "
                                   "compress it again or copy it again")
        return DataFormatError(f"{self.name}: not a valid gzip file ({e}); compress it again or drop the .gz suffix")

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self._gz:
            return (UnicodeDecodeError, gzip.BadGzipFile, EOFError, zlib.error)
        return (UnicodeDecodeError,)

    def __iter__(self) -> TextFile:
        return self

    def __next__(self) -> str:
        try:
            return next(self._f)
        except self._errors() as e:
            raise self._translate(e) from None

    def read(self, size: int = -1) -> str:
        try:
            return self._f.read(size)
        except self._errors() as e:
            raise self._translate(e) from None

    def readline(self, size: int = -1) -> str:
        try:
            return self._f.readline(size)
        except self._errors() as e:
            raise self._translate(e) from None

    def readlines(self) -> list[str]:
        return list(self)

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_text(path: str | os.PathLike) -> TextFile:
    """Open a UTF-8 text file, plain or gzip-compressed, for reading (newlines untranslated).

    Raises:
        DataFormatError: the file does not exist or is a folder; later, while reading, invalid
            UTF-8 (file, line and byte offset named) or a corrupt or truncated gzip file.
    """
    p = Path(path)
    if not p.exists():
        raise DataFormatError(f"{p}: file not found")
    if p.is_dir():
        raise DataFormatError(f"{p}: is a folder, expected a file")
    try:
        return TextFile(p, _is_gzip(p))
    except OSError as e:
        raise DataFormatError(f"{p}: cannot be read ({e.strerror or e})") from None


def iter_tsv_rows(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` for every non-blank data line after the header line.

    Fields are split on tabs, unquoted (``csv.QUOTE_NONE``): a field may contain ``"``.

    Raises:
        DataFormatError: an empty file (no header), or any error of :func:`open_text`.
    """
    name = Path(path).name
    with open_text(path) as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise DataFormatError(f"{name}: file is empty (expected a header line)")
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            yield reader.line_num, row


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)`` for every non-blank line of a JSON Lines file (``.gz`` too).

    Raises:
        DataFormatError: a line that is not valid JSON or not a JSON object (file:line named), or
            any error of :func:`open_text`.
    """
    name = Path(path).name
    with open_text(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{name}:{i}: invalid JSON ({e.msg}); each line must be one JSON object") from None
            except RecursionError:
                raise DataFormatError(f"{name}:{i}: invalid JSON (nested too deeply)") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{name}:{i}: expected a JSON object, got {type(obj).__name__}")
            yield i, obj
