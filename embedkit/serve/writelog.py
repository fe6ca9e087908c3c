"""The append-only, fsync'ed log of accepted writes that lives beside a served index (``INDEX.wal``).

A server acknowledges a write only after its record is on disk. On start the records are replayed
over the last snapshot (the index folder); after a snapshot (the index's own atomic save) the log is
emptied.

Format (version 2, a text file)::

    EKWAL2 seq=<16 hex> end=<16 hex> n=<16 hex> crc=<8 hex><spaces>\\n     header slot 0 (96 bytes)
    EKWAL2 seq=<16 hex> end=<16 hex> n=<16 hex> crc=<8 hex><spaces>\\n     header slot 1 (96 bytes)
    <length: 8 hex> <crc32: 8 hex> <JSON record>\\n                        one line per write
    ...

Each record is ``length`` bytes of UTF-8 JSON framed by its length and a CRC-32 of
``"<length> " + JSON``, written with ``pwrite`` at the end of the log and fsync'ed. Then the header
is *committed*: the slot that does not hold the newest header is overwritten with a higher ``seq``,
the log's acknowledged ``end`` (byte offset) and record count ``n``, and its own CRC, and fsync'ed;
only then is the write acknowledged. The header is the high-water mark of acknowledged writes.

The rule on start:

* every record before ``end`` was acknowledged. If the file is shorter than ``end``, or one of those
  records fails its checks (length, CRC, newline, content), the start is refused with one line naming
  the line of the log: acknowledged writes would otherwise be lost (or a delete undone);
* bytes after ``end`` were never acknowledged (killed between the record's fsync and the header's).
  Complete, valid records there are kept and replayed; from the first incomplete or damaged one on,
  the rest is an interrupted append and is cut off. When one header slot is damaged, the newest
  commit cannot be known, so damaged bytes after ``end`` refuse the start instead;
* a header slot torn by a power loss leaves the other slot, which holds the previous commit: at most
  the write being acknowledged is then past ``end``, complete (its fsync came first) and kept.

Replay is idempotent: an ``add`` replaces documents with the same ids, a ``remove`` ignores ids that
are absent. A kill between a snapshot and the log's truncation therefore replays records that the
snapshot already holds, with the same result.

The log is opened with ``O_NOFOLLOW`` (a symbolic link is refused: it would make the server write to
the link's target) and must be a regular file. It is locked (``flock``) while a server has it open, so
two servers cannot write the same index.

Older logs (version 1: ``CRC32 JSON`` lines, no header) are still read, strictly: every complete
line must be a valid record; an incomplete last line (no newline) is cut with a warning, since that
format cannot tell an interrupted append from a truncated file. After it has been replayed into a
snapshot, :meth:`WriteLog.reset` rewrites the log in version 2 (new records cannot be appended to a
version-1 log before that).

A log truncated to zero bytes or deleted cannot be told from an emptied one: keep the log with the
index (copy, back up and restore both together).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import stat
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from embedkit._io import file_mode
from embedkit._io import fsync_path as _fsync_dir
from embedkit.errors import WriteLogError

__all__ = ["WriteLog", "LogRecord", "log_path_for", "encode_vectors", "decode_vectors", "FORMAT_VERSION"]

logger = logging.getLogger(__name__)

#: suffix of the log file beside an index folder (``INDEX.wal``)
LOG_SUFFIX = ".wal"
#: the format written (version 1 logs are read, see the module docstring)
FORMAT_VERSION = 2

MAGIC = b"EKWAL2"
SLOT_SIZE = 96
HEADER_SIZE = 2 * SLOT_SIZE
_SLOT_RE = re.compile(rb"EKWAL2 seq=([0-9a-f]{16}) end=([0-9a-f]{16}) n=([0-9a-f]{16}) crc=([0-9a-f]{8}) *\n\Z")
_REC_HEAD = 18  # "<8 hex> <8 hex> "
_REC_HEAD_RE = re.compile(rb"[0-9a-f]{8} [0-9a-f]{8} \Z")
_V1_LINE_RE = re.compile(rb"[0-9a-f]{8} \{")

_WHAT_TO_DO = ("the index cannot be brought up to date safely. Restore the log from a backup, or move it aside to "
               "start from the last snapshot (losing the writes recorded after it)")

_sync = getattr(os, "fdatasync", os.fsync)


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
    """One accepted write: ``op`` is ``"add"`` (ids, texts, metadata, vectors) or ``"remove"`` (ids).

    ``line`` is the record's line in the log file when it was read from one (0 otherwise).
    """

    op: str
    ids: list[str]
    texts: list[str] | None = None
    metadata: list[dict | None] | None = None
    vectors: np.ndarray | None = None
    line: int = 0

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
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a list of strings")
        if op == "remove":
            return cls("remove", list(ids))
        if op == "add":
            texts, meta = obj["texts"], obj["metadata"]
            if not isinstance(texts, list) or not isinstance(meta, list):
                raise ValueError("texts and metadata must be lists")
            if len(texts) != len(ids) or len(meta) != len(ids):
                raise ValueError("ids, texts and metadata differ in length")
            return cls("add", list(ids), list(texts), list(meta), decode_vectors(obj["vectors"], len(ids)))
        raise ValueError(f"unknown operation {op!r}")


def _body(record: LogRecord) -> bytes:
    return json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _frame(body: bytes) -> bytes:
    """``<length> <crc> <body>\\n`` (the CRC covers ``"<length> "`` and the body)."""
    head = b"%08x " % len(body)
    return head + b"%08x " % zlib.crc32(body, zlib.crc32(head)) + body + b"\n"


class _Header(NamedTuple):
    seq: int
    end: int
    records: int


def _slot(h: _Header) -> bytes:
    text = b"EKWAL2 seq=%016x end=%016x n=%016x" % (h.seq, h.end, h.records)
    text += b" crc=%08x" % zlib.crc32(text)
    return text.ljust(SLOT_SIZE - 1, b" ") + b"\n"


def _parse_slot(raw: bytes) -> _Header | None:
    m = _SLOT_RE.match(raw)
    if m is None or len(raw) != SLOT_SIZE:
        return None
    if zlib.crc32(raw[: raw.index(b" crc=")]) != int(m.group(4), 16):
        return None
    h = _Header(int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16))
    return h if h.end >= HEADER_SIZE else None


def _parse_record(data: bytes, pos: int) -> tuple[LogRecord | None, int, str]:
    """The record at ``pos``: ``(record, next position, "")`` or ``(None, where it would end, problem)``."""
    head = data[pos:pos + _REC_HEAD]
    if len(head) < _REC_HEAD:
        return None, pos + _REC_HEAD, "incomplete record"
    if not _REC_HEAD_RE.match(head):
        return None, pos + _REC_HEAD, "no record starts here"
    n = int(head[:8], 16)
    nxt = pos + _REC_HEAD + n + 1
    if nxt > len(data):
        return None, nxt, "incomplete record"
    body = data[pos + _REC_HEAD:nxt - 1]
    if data[nxt - 1] != 0x0A:
        return None, nxt, "no newline at the record's end"
    if zlib.crc32(body, zlib.crc32(head[:9])) != int(head[9:17], 16):
        return None, nxt, "checksum mismatch"
    try:
        return LogRecord.from_json(json.loads(body)), nxt, ""
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return None, nxt, f"the checksum is right but the content is not a write-log record: {e}"


def _parse_v1(raw: bytes) -> LogRecord | None:
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
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class WriteLog:
    """An open, locked write log. Not for concurrent appends: the server serialises writes.

    Args:
        path: the log file (its folder must exist).
        create: create the file if it is missing (with ``False`` a missing file raises
            ``FileNotFoundError``).

    Raises:
        WriteLogError: another process holds the log (the index is being served already), the path
            is a symbolic link or not a regular file, or the file is not a write log.
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = Path(path)
        self._fd: int | None = None
        self.failed: str | None = None
        created = create and not os.path.lexists(self.path)
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, file_mode())
        except OSError as e:
            if e.errno == errno.ELOOP or self.path.is_symlink():
                raise WriteLogError(
                    f"{self.path} is a symbolic link; the write log must be a regular file beside the index (a link "
                    "would make the server truncate and write its target). Remove the link, or put the log file "
                    "itself there") from None
            if e.errno == errno.EISDIR:
                raise WriteLogError(f"{self.path} is not a regular file; the write log beside the index must be one "
                                    "(move that entry away)") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise WriteLogError(f"{self.path} is not a regular file; the write log beside the index must be one "
                                    "(move that entry away)")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WriteLogError(f"{self.path} is locked: another `embedkit serve` is serving this index; "
                                    "stop it first (one server per index)") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._lock = threading.Lock()
        self.records = 0
        self.version = FORMAT_VERSION
        self._header = _Header(0, HEADER_SIZE, 0)
        self._slots_ok = True
        if st.st_size == 0:
            self._write_fresh_header()
            if created:
                _fsync_dir(self.path.parent)
        else:
            self._detect()
        self.size = os.fstat(fd).st_size
        # appending needs the end of the last record: known for an empty log, else once read() has run
        self._ready = self.version == FORMAT_VERSION and self._header.records == 0 and self.size == HEADER_SIZE

    # -- header ---------------------------------------------------------------------------------
    def _pwrite_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def _write_fresh_header(self) -> None:
        os.ftruncate(self._fd, 0)
        self._header = _Header(1, HEADER_SIZE, 0)
        self._pwrite_all(_slot(_Header(0, HEADER_SIZE, 0)) + _slot(self._header), 0)
        _sync(self._fd)
        self.version = FORMAT_VERSION
        self.size = HEADER_SIZE

    def _commit(self, end: int, records: int) -> None:
        """Make ``end``/``records`` the acknowledged state: overwrite the older header slot, fsync."""
        h = _Header(self._header.seq + 1, end, records)
        self._pwrite_all(_slot(h), (h.seq % 2) * SLOT_SIZE)
        _sync(self._fd)
        self._header = h

    def _detect(self) -> None:
        head = os.pread(self._fd, HEADER_SIZE, 0)
        slots = [_parse_slot(head[i * SLOT_SIZE:(i + 1) * SLOT_SIZE]) for i in range(2)]
        if any(slots):
            self.version = 2
            self._header = max((s for s in slots if s), key=lambda s: s.seq)
            self._slots_ok = all(slots)
        elif _V1_LINE_RE.match(head):
            self.version = 1
        else:
            raise WriteLogError(
                f"{self.path}:1: not an embedkit write log, or its header (lines 1-2) is damaged; "
                f"{_WHAT_TO_DO}")

    # -- reading --------------------------------------------------------------------------------
    def read(self) -> Iterator[LogRecord]:
        """Yield every record to replay (all are read and checked first).

        Cuts an interrupted append (never acknowledged) off the end of the file.

        Raises:
            WriteLogError: an acknowledged record is damaged or missing (names the line).
        """
        return iter(self.read_all())

    def read_all(self) -> list[LogRecord]:
        """Every record to replay, in order; see :meth:`read`."""
        size = os.fstat(self._fd).st_size
        data = os.pread(self._fd, size, 0) if size else b""
        records = self._read_v1(data) if self.version == 1 else self._read_v2(data)
        self._ready = True
        return records

    def _damaged(self, line: int, pos: int, problem: str) -> WriteLogError:
        h = self._header
        return WriteLogError(
            f"{self.path}:{line}: damaged write-log record at byte {pos} ({problem}); it was acknowledged (the "
            f"header counts {h.records} acknowledged records up to byte {h.end}), so {_WHAT_TO_DO}")

    def _read_v2(self, data: bytes) -> list[LogRecord]:
        h = self._header
        pos, line, records = HEADER_SIZE, 3, []
        while pos < h.end:
            rec, nxt, problem = _parse_record(data, pos)
            if rec is None and len(data) < h.end and nxt > len(data):
                raise WriteLogError(
                    f"{self.path}:{line}: the log is cut short: it ends at byte {len(data)}, but {h.records} records "
                    f"up to byte {h.end} were acknowledged (the writes from line {line} on are missing), so "
                    f"{_WHAT_TO_DO}")
            if rec is None:
                raise self._damaged(line, pos, problem)
            if nxt > h.end:
                raise self._damaged(line, pos, "it runs past the acknowledged end")
            rec.line = line
            records.append(rec)
            pos, line = nxt, line + 1
        if len(records) != h.records:
            raise WriteLogError(f"{self.path}:{line}: the header counts {h.records} acknowledged records but the log "
                                f"holds {len(records)} up to byte {h.end}; {_WHAT_TO_DO}")
        n_acked = len(records)
        while pos < len(data):  # written after the last acknowledgement
            rec, nxt, problem = _parse_record(data, pos)
            if rec is None:
                break
            rec.line = line
            records.append(rec)
            pos, line = nxt, line + 1
        if pos < len(data):
            if not self._slots_ok:
                raise WriteLogError(
                    f"{self.path}:{line}: damaged bytes after the acknowledged records, and a damaged header slot: "
                    f"an interrupted write cannot be told from damage to acknowledged ones, so {_WHAT_TO_DO}")
            logger.warning("%s:%d: cut %d bytes of an interrupted append; that write was never acknowledged",
                           self.path, line, len(data) - pos)
            os.ftruncate(self._fd, pos)
            _sync(self._fd)
        if len(records) > n_acked:
            logger.info("%s: %d complete record(s) written after the last acknowledgement (killed before the answer) "
                        "are replayed", self.path, len(records) - n_acked)
        if pos != h.end or len(records) != n_acked or not self._slots_ok:
            self._commit(pos, len(records))
            self._slots_ok = True
        self.records = len(records)
        self.size = pos
        return records

    def _read_v1(self, data: bytes) -> list[LogRecord]:
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline: an interrupted append, or b""
        records = []
        for n, raw in enumerate(lines, start=1):
            rec = _parse_v1(raw)
            if rec is None:
                raise WriteLogError(
                    f"{self.path}:{n}: damaged write-log record (checksum or format) in a version-1 write log; "
                    f"{_WHAT_TO_DO}")
            rec.line = n
            records.append(rec)
        if tail:
            logger.warning("%s:%d: cut an incomplete last line (%d bytes) of a version-1 write log: an interrupted "
                           "append (this older format cannot tell it from a truncated file)", self.path,
                           len(lines) + 1, len(tail))
            os.ftruncate(self._fd, len(data) - len(tail))
            _sync(self._fd)
        self.size = len(data) - len(tail)
        self.records = len(records)
        if not records:
            with self._lock:
                self._write_fresh_header()
        return records

    # -- writing --------------------------------------------------------------------------------
    def append(self, record: LogRecord) -> int:
        """Write one record, fsync it, commit the header; returns the offset before it (for :meth:`truncate_to`).

        Raises:
            WriteLogError: the log is in the older format (replay it and :meth:`reset` first).
            OSError: the record could not be made durable (then it is not part of the log).
        """
        data = _frame(_body(record))
        with self._lock:
            if self.failed:
                raise OSError(errno.EIO, f"the write log is unusable: {self.failed}")
            if self.version != FORMAT_VERSION:
                raise WriteLogError(f"{self.path} is a version-{self.version} write log; replay it into a snapshot "
                                    "and reset it before appending")
            if not self._ready:
                raise WriteLogError(f"{self.path} holds records: read (replay) them before appending")
            start = self.size
            try:
                self._pwrite_all(data, start)
                _sync(self._fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # past the acknowledged end: harmless either way
                raise
            try:
                self._commit(start + len(data), self.records + 1)
            except BaseException as e:
                # the header may or may not be on disk: the record stays (complete, fsync'ed) and the log
                # takes no more writes; it is replayed on the next start
                self.failed = f"its header could not be written ({e})"
                self.size = start + len(data)
                raise
            self.size = start + len(data)
            self.records += 1
            return start

    def truncate_to(self, offset: int) -> None:
        """Undo the last record (a write that was logged but could not be applied); ``offset`` is what
        :meth:`append` returned."""
        with self._lock:
            self._commit(offset, max(self.records - 1, 0))  # first: a crash in between keeps a valid record
            os.ftruncate(self._fd, offset)
            _sync(self._fd)
            self.size = offset
            self.records = max(self.records - 1, 0)

    def reset(self) -> None:
        """Empty the log (after a snapshot holds every record)."""
        with self._lock:
            if self.version != FORMAT_VERSION:
                self._write_fresh_header()
            else:
                self._commit(HEADER_SIZE, 0)  # first: a crash before the truncation replays snapshotted records
                os.ftruncate(self._fd, HEADER_SIZE)
                _sync(self._fd)
                self.size = HEADER_SIZE
            self.records = 0
            self.failed = None
            self._ready = True

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
