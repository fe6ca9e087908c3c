"""SQLite document store: stable integer key, unique string id, text, JSON metadata.

Held in memory while the index lives; written with ``VACUUM INTO`` so that the file on disk has
no free pages (the text of removed documents is really gone).

One connection, usable from any thread (``check_same_thread=False``) and serialised by a lock: SQLite
connections must not be used by two threads at once. Writes go through :meth:`DocStore.transaction`,
so an index can roll them back when a later step of the same operation fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from embedkit.errors import EmbedkitError, IndexFormatError
from embedkit.retrieval.keyword import enable_keyword, has_keyword, keyword_search

__all__ = ["DocStore", "SCHEMA", "sqlite_readonly_uri"]

SCHEMA = "CREATE TABLE IF NOT EXISTS docs (key INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL, metadata TEXT)"
_CHUNK = 500


def sqlite_readonly_uri(path: str | os.PathLike) -> str:
    """A ``file:`` URI that opens ``path`` read-only, with ``#``, ``?`` and ``%`` escaped.

    Example:
        >>> sqlite_readonly_uri("/data/my#idx?x%20/docs.sqlite")
        'file:/data/my%23idx%3Fx%2520/docs.sqlite?mode=ro'
    """
    return "file:" + urllib.parse.quote(str(Path(path).absolute()), safe="/") + "?mode=ro"


class DocStore:
    """Documents keyed by an increasing integer ``key`` (insertion order) and a unique ``id``."""

    def __init__(self, conn: sqlite3.Connection | None = None, *, keyword: bool = False):
        self.conn = conn or sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.RLock()
        self._fields: dict | None = None
        with self._lock:
            self.conn.execute(SCHEMA)
            self.conn.commit()
            if keyword:
                enable_keyword(self.conn)

    @property
    def keyword(self) -> bool:
        """Whether the store holds the keyword (FTS5) index of its texts."""
        with self._lock:
            return has_keyword(self.conn)

    def keyword_search(self, query: str, k: int, flt=None) -> list[tuple[int, float]]:
        """``(key, bm25)`` of the ``k`` best documents for ``query`` (among those ``flt`` allows)."""
        with self._lock:
            return keyword_search(self.conn, query, k, where_sql=None if flt is None else flt.sql,
                                  where_params=() if flt is None else flt.params)

    def allowed_keys(self, flt) -> Any:
        """Sorted keys (int64 array) of the documents the compiled filter ``flt`` allows."""
        import numpy as np

        with self._lock:
            rows = self.conn.execute(f"SELECT key FROM docs WHERE {flt.sql} ORDER BY key", flt.params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def field_types(self) -> dict[str, set[str]]:
        """``{metadata field: JSON types}`` (cached until the next insert)."""
        from embedkit.retrieval.filters import field_types

        with self._lock:
            if self._fields is None:
                self._fields = field_types(self.conn)
            return self._fields

    @classmethod
    def load(cls, path: str | os.PathLike) -> DocStore:
        """Copy the SQLite file at ``path`` (opened read-only, by an escaped URI) into memory."""
        mem = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            src = sqlite3.connect(sqlite_readonly_uri(path), uri=True)
            try:
                src.backup(mem)
            finally:
                src.close()
            mem.execute("SELECT key, id, text, metadata FROM docs LIMIT 1").fetchall()
        except sqlite3.Error as e:
            mem.close()
            raise IndexFormatError(f"{path}: not a readable embedkit docstore ({e})") from e
        return cls(mem)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        with self._lock:
            if path.exists():
                path.unlink()
            self.conn.commit()
            self.conn.execute("VACUUM INTO ?", (str(path),))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[DocStore]:
        """Hold the store for a group of writes: committed if the block succeeds, rolled back if it raises."""
        with self._lock:
            try:
                yield self
            except BaseException:
                self.conn.rollback()
                raise
            self.conn.commit()

    def __len__(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def keys(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self.conn.execute("SELECT key FROM docs ORDER BY key")]

    def next_key(self) -> int:
        with self._lock:
            r = self.conn.execute("SELECT MAX(key) FROM docs").fetchone()[0]
        return 0 if r is None else r + 1

    def existing_ids(self, ids: Iterable[str]) -> list[str]:
        ids = list(ids)
        found = []
        with self._lock:
            for s in range(0, len(ids), _CHUNK):
                chunk = ids[s : s + _CHUNK]
                q = f"SELECT id FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
                found += [r[0] for r in self.conn.execute(q, chunk)]
        return found

    def insert(self, keys: Sequence[int], ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict | None]) -> None:
        """Insert rows without committing (use inside :meth:`transaction`)."""
        rows = [(int(k), i, t, json.dumps(m) if m is not None else None) for k, i, t, m in zip(keys, ids, texts, metadata)]
        with self._lock:
            self._fields = None
            try:
                self.conn.executemany("INSERT INTO docs (key, id, text, metadata) VALUES (?, ?, ?, ?)", rows)
            except sqlite3.IntegrityError as e:
                raise EmbedkitError(f"duplicate document id ({e})") from e

    def add(self, keys: Sequence[int], ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict | None]) -> None:
        """Insert rows and commit (all or none)."""
        with self.transaction():
            self.insert(keys, ids, texts, metadata)

    def keys_of(self, ids: Sequence[str]) -> dict[str, int]:
        out = {}
        ids = list(ids)
        with self._lock:
            for s in range(0, len(ids), _CHUNK):
                chunk = ids[s : s + _CHUNK]
                q = f"SELECT id, key FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
                out.update(dict(self.conn.execute(q, chunk).fetchall()))
        return out

    def delete(self, keys: Sequence[int]) -> None:
        """Delete rows without committing (use inside :meth:`transaction`)."""
        with self._lock:
            self.conn.executemany("DELETE FROM docs WHERE key = ?", [(int(k),) for k in keys])

    def delete_keys(self, keys: Sequence[int]) -> None:
        """Delete rows and commit (all or none)."""
        with self.transaction():
            self.delete(keys)

    def get(self, keys: Sequence[int]) -> dict[int, tuple[str, str, dict[str, Any] | None]]:
        out = {}
        keys = [int(k) for k in keys]
        with self._lock:
            for s in range(0, len(keys), _CHUNK):
                chunk = keys[s : s + _CHUNK]
                q = f"SELECT key, id, text, metadata FROM docs WHERE key IN ({','.join('?' * len(chunk))})"
                for key, did, text, meta in self.conn.execute(q, chunk):
                    out[key] = (did, text, json.loads(meta) if meta else None)
        return out

    def ids_for_keys(self, keys: Sequence[int]) -> dict[int, str]:
        return {k: v[0] for k, v in self.get(keys).items()}
