"""The append-only, fsync'ed log of accepted writes that lives beside a served index.

A server acknowledges a write only after its record is on disk: one line per write,
``CRC32 JSON\\n``, appended with a single ``write`` and followed by ``fsync``. On start the
records are replayed over the last snapshot (the index folder); after a snapshot (the index's own
atomic save) the log is emptied.

Replay is idempotent: an ``add`` replaces documents with the same ids, a ``remove`` ignores ids that
are absent. A kill between a snapshot and the log's truncation therefore replays records that the
snapshot already holds, with the same result. A torn last line (killed or power lost mid-append: that
write was never acknowledged) is cut off; a damaged line before the end refuses the start.

The log file is locked (``flock``) while a server has it open, so two servers cannot write the same
index.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedkit._io import file_mode
from embedkit._io import fsync_path as _fsync_dir
from embedkit.errors import WriteLogError

__all__ = ["WriteLog", "LogRecord", "log_path_for", "encode_vectors", "decode_vectors"]

logger = logging.getLogger(__name__)

#: suffix of the log file beside an index folder (``INDEX.wal``)
LOG_SUFFIX = ".wal"


def log_path_for(index_path: str | os.PathLike) -> Path:
    """The write log beside ``index_path``: ``my_index`` -> ``my_index.wal``."""
    p = Path(index_path).absolute()
    return p.with_name(p.name + LOG_SUFFIX)


def encode_vectors(X: np.ndarray) -> dict[str, Any]:
    """float32 vectors as JSON-friendly base64 (little-endian), exactly as acknowledged."""
    X = np.ascontiguousarray(X, dtype="<f4")
    return {"dim": int(X.shape[1]), "b64": base64.b64encode(X.tobytes()).decode("ascii")}


def decode_vectors(obj: dict[str, Any], n: int) -> np.ndarray:
    raw = base64.b64decode(obj["b64"], validate=True)
    dim = int(obj["dim"])
    X = np.frombuffer(raw, dtype="<f4")
    if dim < 1 or X.size != n * dim:
        raise ValueError(f"{X.size} floats for {n} vectors of dimension {dim}")
    return X.reshape(n, dim).astype(np.float32)


@dataclass
class LogRecord:
    """One accepted write: ``op`` is ``"add"`` (ids, texts, metadata, vectors) or ``"remove"`` (ids)."""

    op: str
    ids: list[str]
    texts: list[str] | None = None
    metadata: list[dict | None] | None = None
    vectors: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "ids": self.ids}
        if self.op == "add":
            out["texts"] = self.texts
            out["metadata"] = self.metadata
            out["vectors"] = encode_vectors(self.vectors)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LogRecord:
        op, ids = obj["op"], obj["ids"]
        if op == "remove":
            return cls("remove", [str(i) for i in ids])
        if op == "add":
            texts, meta = obj["texts"], obj["metadata"]
            if len(texts) != len(ids) or len(meta) != len(ids):
                raise ValueError("ids, texts and metadata differ in length")
            return cls("add", [str(i) for i in ids], list(texts), list(meta), decode_vectors(obj["vectors"], len(ids)))
        raise ValueError(f"unknown operation {op!r}")


def _line(record: LogRecord) -> bytes:
    body = json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return b"%08x " % zlib.crc32(body) + body + b"\n"




class WriteLog:
    """An open, locked write log. Not for concurrent appends: the server serialises writes.

    Args:
        path: the log file (created if missing; its folder must exist).

    Raises:
        WriteLogError: another process holds the log (the index is being served already).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriteLogError(f"{self.path} is locked: another `embedkit serve` is serving this index; "
                                "stop it first (one server per index)") from None
        self._fd = fd
        if created:
            os.fsync(fd)
            _fsync_dir(self.path.parent)
        self._lock = threading.Lock()
        self.records = 0
        self.size = os.fstat(fd).st_size

    # -- reading --------------------------------------------------------------------------------
    def read(self) -> Iterator[LogRecord]:
        """Yield every complete record; cut a torn last line off the file (that write was never acknowledged).

        Raises:
            WriteLogError: a damaged record before the last line (names the line).
        """
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline: a torn append, or b""
        good_end = 0
        records = []
        for n, raw in enumerate(lines, start=1):
            rec = self._parse(raw)
            if rec is None:
                if n == len(lines) and not tail:
                    break  # the last line is damaged: a torn append that was never acknowledged
                raise WriteLogError(
                    f"{self.path}:{n}: damaged write-log record (checksum or format) before the end of the log; "
                    f"the index cannot be brought up to date safely. Move the log aside to start from the last "
                    f"snapshot (losing the writes recorded after it), or restore it from a backup")
            records.append(rec)
            good_end += len(raw) + 1
        if good_end != len(data):
            logger.warning("%s: cut a torn last record (%d bytes) left by an interrupted write; that write was "
                           "never acknowledged", self.path, len(data) - good_end)
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
        self.records = len(records)
        self.size = good_end
        yield from records

    @staticmethod
    def _parse(raw: bytes) -> LogRecord | None:
        if len(raw) < 10 or raw[8:9] != b" ":
            return None
        try:
            crc = int(raw[:8], 16)
        except ValueError:
            return None
        body = raw[9:]
        if zlib.crc32(body) != crc:
            return None
        try:
            return LogRecord.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError):
            return None

    # -- writing --------------------------------------------------------------------------------
    def append(self, record: LogRecord) -> int:
        """Write one record and fsync it; returns the offset before it (for :meth:`truncate_to`)."""
        data = _line(record)
        with self._lock:
            start = self.size
            view = memoryview(data)
            try:
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                os.fsync(self._fd)
            except BaseException:
                self._truncate_locked(start)
                raise
            self.size = start + len(data)
            self.records += 1
            return start

    def truncate_to(self, offset: int) -> None:
        """Undo the records after ``offset`` (a write that was logged but could not be applied)."""
        with self._lock:
            self._truncate_locked(offset)
            self.records = max(self.records - 1, 0)

    def _truncate_locked(self, offset: int) -> None:
        os.ftruncate(self._fd, offset)
        os.fsync(self._fd)
        self.size = offset

    def reset(self) -> None:
        """Empty the log (after a snapshot holds every record)."""
        with self._lock:
            self._truncate_locked(0)
            self.records = 0

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
