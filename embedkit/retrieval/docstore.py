"""SQLite document store: stable integer key, unique string id, text, JSON metadata.

Held in memory while the index lives; written with ``VACUUM INTO`` so that the file on disk has
no free pages (the text of removed documents is really gone).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Sequence

from embedkit.errors import EmbedkitError, IndexFormatError

SCHEMA = "CREATE TABLE IF NOT EXISTS docs (key INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL, metadata TEXT)"


class DocStore:
    """Documents keyed by an increasing integer ``key`` (insertion order) and a unique ``id``."""

    def __init__(self, conn: sqlite3.Connection | None = None):
        self.conn = conn or sqlite3.connect(":memory:")
        self.conn.execute(SCHEMA)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DocStore":
        mem = sqlite3.connect(":memory:")
        try:
            src = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
            src.backup(mem)
            src.close()
            mem.execute("SELECT key, id, text, metadata FROM docs LIMIT 1").fetchall()
        except sqlite3.DatabaseError as e:
            raise IndexFormatError(f"{path}: not a readable embedkit docstore ({e})") from e
        return cls(mem)

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.exists():
            path.unlink()
        self.conn.commit()
        self.conn.execute("VACUUM INTO ?", (str(path),))

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def keys(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT key FROM docs ORDER BY key")]

    def next_key(self) -> int:
        r = self.conn.execute("SELECT MAX(key) FROM docs").fetchone()[0]
        return 0 if r is None else r + 1

    def existing_ids(self, ids: Iterable[str]) -> list[str]:
        ids = list(ids)
        found = []
        for s in range(0, len(ids), 500):
            chunk = ids[s : s + 500]
            q = f"SELECT id FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
            found += [r[0] for r in self.conn.execute(q, chunk)]
        return found

    def add(self, keys: Sequence[int], ids: Sequence[str], texts: Sequence[str], metadata: Sequence[dict | None]) -> None:
        rows = [(k, i, t, json.dumps(m) if m is not None else None) for k, i, t, m in zip(keys, ids, texts, metadata)]
        try:
            self.conn.executemany("INSERT INTO docs (key, id, text, metadata) VALUES (?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError as e:
            raise EmbedkitError(f"duplicate document id ({e})") from e
        self.conn.commit()

    def keys_of(self, ids: Sequence[str]) -> dict[str, int]:
        out = {}
        ids = list(ids)
        for s in range(0, len(ids), 500):
            chunk = ids[s : s + 500]
            q = f"SELECT id, key FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
            out.update(dict(self.conn.execute(q, chunk).fetchall()))
        return out

    def delete_keys(self, keys: Sequence[int]) -> None:
        self.conn.executemany("DELETE FROM docs WHERE key = ?", [(int(k),) for k in keys])
        self.conn.commit()

    def get(self, keys: Sequence[int]) -> dict[int, tuple[str, str, dict[str, Any] | None]]:
        out = {}
        keys = [int(k) for k in keys]
        for s in range(0, len(keys), 500):
            chunk = keys[s : s + 500]
            q = f"SELECT key, id, text, metadata FROM docs WHERE key IN ({','.join('?' * len(chunk))})"
            for key, did, text, meta in self.conn.execute(q, chunk):
                out[key] = (did, text, json.loads(meta) if meta else None)
        return out

    def ids_for_keys(self, keys: Sequence[int]) -> dict[int, str]:
        return {k: v[0] for k, v in self.get(keys).items()}
