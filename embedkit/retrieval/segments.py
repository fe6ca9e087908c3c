"""The pieces a disk-backed index is made of: segments (a FAISS index, rescoring vectors and a SQLite
docstore over a range of keys), the tombstones of removed keys, and the files a folder owns.

:class:`SegmentState` is the mutable state one :class:`~embedkit.retrieval.ondisk.DiskIndex` owns
(its segments, the sorted removed keys, the next key); :class:`SegmentDocs` is the docstore interface
the shared index code uses, read over that state; :class:`AliveKeys` maps search rows to keys without
anything per document in memory.

A disk-backed index folder holds immutable *segments* plus one tombstone file::

    INDEX/
      manifest.json        as for every index, plus: segments [{name, start, count, ivfdata}],
                           removed {file, count}, generation, nprobe, ef_search
      quantizer.json/.npz  the compression (fitted once, on a sample for streamed builds)
      empty.faiss          backend ivf: the trained, empty IVF index new segments start from
      seg-NNNNN.faiss      the FAISS index of a segment's codes (IVF: header + coarse quantizer only)
      seg-NNNNN.ivfdata    IVF: FAISS on-disk inverted lists (``OnDiskInvertedLists``), memory-mapped
      seg-NNNNN.f16.npy    float16 rescoring vectors (memory-mapped)
      seg-NNNNN.sqlite     the segment's documents, queried on disk (read-only, never copied to RAM)
      removed-NNNNN.npy    sorted keys of removed documents (tombstones)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedkit._io import atomic_save_npy
from embedkit.errors import IndexFormatError
from embedkit.retrieval._growable import Growable
from embedkit.retrieval.docstore import SCHEMA, sqlite_readonly_uri
from embedkit.retrieval.keyword import (
    enable_keyword,
    global_keyword_search,
    keyword_search,
    query_phrases,
    segment_matches,
)
from embedkit.retrieval.lists import deserialize_index, read_segment_index, write_ondisk_lists
from embedkit.retrieval.manifest import MANIFEST, file_entries

__all__ = ["OWNED_FILE", "AliveKeys", "Segment", "SegmentDocs", "SegmentState", "clean_unreferenced",
           "link_or_copy", "new_memory_db", "open_segment", "open_sqlite_ro", "write_segment"]

#: names of the segment and tombstone files a disk-backed folder owns (and a save may delete)
OWNED_FILE = re.compile(r"^(seg-\d{5}\.(faiss|ivfdata|f16\.npy|sqlite)|removed-\d{5}\.npy)$")


# -- segments --------------------------------------------------------------------------------------
class Segment:
    """One segment: a FAISS index over keys ``start .. start+count-1``, its rescoring vectors and documents."""

    def __init__(self, name: str, start: int, index, conn: sqlite3.Connection, vecs, *, ivfdata: bool,
                 saved: bool):
        self.name, self.start, self.index, self.conn, self.vecs = name, start, index, conn, vecs
        self.ivfdata, self.saved = ivfdata, saved
        self.lock = threading.RLock()

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def rescore_vectors(self) -> np.ndarray | None:
        return self.vecs.view() if isinstance(self.vecs, Growable) else self.vecs

    def docs(self, keys: Sequence[int]) -> dict:
        import json

        out = {}
        with self.lock:
            for s in range(0, len(keys), 500):
                chunk = [int(k) for k in keys[s: s + 500]]
                q = f"SELECT key, id, text, metadata FROM docs WHERE key IN ({','.join('?' * len(chunk))})"
                for key, did, text, meta in self.conn.execute(q, chunk):
                    out[key] = (did, text, json.loads(meta) if meta else None)
        return out

    def keyword_search(self, query: str, k: int, flt=None) -> list[tuple[int, float]]:
        with self.lock:
            return keyword_search(self.conn, query, k, where_sql=None if flt is None else flt.sql,
                                  where_params=() if flt is None else flt.params)

    def keyword_matches(self, phrases, removed: np.ndarray):
        """This segment's part of an index-wide BM25 ranking (:func:`~embedkit.retrieval.keyword.segment_matches`);
        ``removed``: its tombstoned keys (their total length is cached: tombstones only grow)."""
        with self.lock:
            cached = getattr(self, "_removed_tokens", None)
            known = cached[1] if cached is not None and cached[0] == len(removed) else None
            part = segment_matches(self.conn, phrases, removed, known)
            if len(removed) and known is None:
                self._removed_tokens = (len(removed), part.removed_tokens)
        return part

    def allowed_keys(self, flt) -> np.ndarray:
        with self.lock:
            rows = self.conn.execute(f"SELECT key FROM docs WHERE {flt.sql} ORDER BY key", flt.params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def field_types(self) -> dict[str, set[str]]:
        """``{metadata field: JSON types}``; cached for a saved (immutable) segment."""
        from embedkit.retrieval.filters import field_types

        cached = getattr(self, "_fields", None)
        if cached is not None and self.saved:
            return cached
        with self.lock:
            self._fields = field_types(self.conn)
        return self._fields

    def id_keys(self, ids: Sequence[str]) -> list[tuple[str, int]]:
        out = []
        with self.lock:
            for s in range(0, len(ids), 500):
                chunk = list(ids[s: s + 500])
                q = f"SELECT id, key FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
                out += self.conn.execute(q, chunk).fetchall()
        return out


@dataclass
class SegmentState:
    """What a disk-backed index holds: its segments in key order, the sorted removed keys, the next key."""

    segments: list[Segment] = field(default_factory=list)
    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    next_key: int = 0

    def __len__(self) -> int:
        return self.next_key - len(self.removed)

    def segment_of(self, keys: np.ndarray) -> np.ndarray:
        """Position in :attr:`segments` of the segment holding each key."""
        starts = np.array([s.start for s in self.segments], dtype=np.int64)
        return np.searchsorted(starts, keys, side="right") - 1

    def rescore_vectors(self, keys: np.ndarray, dim: int) -> np.ndarray:
        """float16 rescoring vectors of ``keys`` (sorted, unique), gathered segment by segment."""
        vecs = np.zeros((len(keys), dim), dtype=np.float16)
        if len(keys):
            seg_of = self.segment_of(keys)
            for si in np.unique(seg_of):
                seg = self.segments[int(si)]
                sel = seg_of == si
                vecs[sel] = np.asarray(seg.rescore_vectors()[keys[sel] - seg.start])
        return vecs


    def rescore(self, Qr: np.ndarray, K: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rescore candidate keys ``K`` (-1 pads) with their float16 vectors; ``(scores, keys)`` of the best k."""
        from embedkit.compression.rescore import rescore as rescore_candidates

        uniq = np.unique(K[K >= 0])
        vecs = self.rescore_vectors(uniq, Qr.shape[1])
        pos = np.where(K >= 0, np.searchsorted(uniq, np.maximum(K, 0)), -1)
        scores, pos = rescore_candidates(Qr, vecs, pos, k)
        return scores, np.where(pos >= 0, uniq[np.maximum(pos, 0)] if len(uniq) else -1, -1)


class SegmentDocs:
    """The docstore interface the shared index code uses, over every segment's SQLite file."""

    def __init__(self, state: SegmentState):
        self.state = state

    def get(self, keys) -> dict:
        keys = np.asarray(keys, dtype=np.int64)
        out = {}
        if len(keys) == 0:
            return out
        seg_of = self.state.segment_of(keys)
        for si in np.unique(seg_of):
            out.update(self.state.segments[int(si)].docs(keys[seg_of == si].tolist()))
        return out

    def ids_for_keys(self, keys) -> dict:
        return {k: v[0] for k, v in self.get(keys).items()}

    def keys_of(self, ids: Sequence[str]) -> dict[str, int]:
        found = {}
        removed = self.state.removed
        for seg in self.state.segments:
            for did, key in seg.id_keys(list(ids)):
                i = np.searchsorted(removed, key)
                if not (i < len(removed) and removed[i] == key):
                    found[did] = key
        return found

    def existing_ids(self, ids) -> list[str]:
        found = self.keys_of(list(ids))
        return [i for i in ids if i in found]

    def keyword_search(self, query: str, k: int, flt=None) -> list[tuple[int, float]]:
        """``(key, bm25)`` of the ``k`` best documents, removed ones left out, scored as one keyword
        table holding every live document would score them: one segment without tombstones by FTS5's
        ``bm25()``, otherwise with the index-wide statistics
        (:func:`~embedkit.retrieval.keyword.global_keyword_search`)."""
        removed = self.state.removed
        segs = [s for s in self.state.segments if s.count]
        if len(segs) == 1 and not len(removed):
            return segs[0].keyword_search(query, k, flt)
        phrases = query_phrases(query)
        if not segs or not phrases:
            return []
        parts = []
        for seg in segs:
            lo, hi = np.searchsorted(removed, [seg.start, seg.start + seg.count])
            parts.append(seg.keyword_matches(phrases, removed[lo:hi]))
        return global_keyword_search(parts, k, allowed=None if flt is None else self.allowed_keys(flt))

    def allowed_keys(self, flt) -> np.ndarray:
        """Sorted keys of the documents (not removed) the compiled filter ``flt`` allows."""
        parts = [seg.allowed_keys(flt) for seg in self.state.segments if seg.count]
        keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return keys[~np.isin(keys, self.state.removed)] if len(self.state.removed) else keys

    def field_types(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for seg in self.state.segments:
            for name, types in seg.field_types().items():
                out.setdefault(name, set()).update(types)
        return out

    def next_key(self) -> int:
        return self.state.next_key

    def __len__(self) -> int:
        return len(self.state)


class AliveKeys:
    """Row -> key of the documents not removed, computed from the tombstones (nothing per document in RAM)."""

    def __init__(self, total: int, removed: np.ndarray):
        self.total, self.removed = total, removed
        self._gaps = removed - np.arange(len(removed), dtype=np.int64)  # alive keys before each removed key

    def __len__(self) -> int:
        return self.total - len(self.removed)

    def __getitem__(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        return rows + np.searchsorted(self._gaps, rows, side="right")

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        return keys - np.searchsorted(self.removed, keys)


def open_sqlite_ro(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(sqlite_readonly_uri(path) + "&immutable=1", uri=True, check_same_thread=False)
        conn.execute("SELECT key, id, text, metadata FROM docs LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise IndexFormatError(f"{path}: not a readable embedkit docstore ({e}); rebuild the index") from None
    return conn


def new_memory_db(keyword: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute(SCHEMA)
    conn.commit()
    if keyword:
        enable_keyword(conn)
    return conn


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def clean_unreferenced(folder: Path, referenced: set[str]) -> None:
    """Delete segment/tombstone files and temporary files no manifest references (left by earlier saves)."""
    for entry in os.scandir(folder):
        name = entry.name
        if name in referenced or name == MANIFEST:
            continue
        if OWNED_FILE.match(name) or (name.startswith(".seg-") and name.endswith(".tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def write_segment(folder: Path, seg: Segment, name: str, *, backend: str, binary: bool,
              empty_index: bytes | None, rescore: bool) -> dict:
    """Write an in-memory segment's files under ``name`` into ``folder``; return their file entries."""
    import faiss

    files = []
    entries = {}
    if backend == "ivf":
        entries.update(write_ondisk_lists(deserialize_index(empty_index, binary), seg.index,
                                          folder / f"{name}.faiss", folder / f"{name}.ivfdata"))
    else:
        tmp = folder / f".{name}.faiss.tmp"
        if binary:
            faiss.write_index_binary(seg.index, str(tmp))
        else:
            faiss.write_index(seg.index, str(tmp))
        os.replace(tmp, folder / f"{name}.faiss")
        files.append(f"{name}.faiss")
    if rescore:
        atomic_save_npy(folder / f"{name}.f16.npy", np.ascontiguousarray(seg.rescore_vectors(), dtype=np.float16))
        files.append(f"{name}.f16.npy")
    db = folder / f"{name}.sqlite"
    tmp = folder / f".{name}.sqlite.tmp"
    tmp.unlink(missing_ok=True)
    with seg.lock:
        seg.conn.commit()
        seg.conn.execute("VACUUM INTO ?", (str(tmp),))
    os.replace(tmp, db)
    files.append(db.name)
    entries.update(file_entries(folder, files))
    return entries


def open_segment(path: Path, entry: dict, *, binary: bool, rescore_dim: int | None, keyword: bool = False) -> Segment:
    """Open the saved segment ``entry`` (``{name, start, count, ivfdata}``) of the index folder ``path``:
    its FAISS index and rescoring vectors memory-mapped, its docstore read-only, every shape checked."""
    name = entry["name"]
    fx = read_segment_index(path / f"{name}.faiss", path / f"{name}.ivfdata" if entry.get("ivfdata") else None,
                            binary)
    if fx.ntotal != entry["count"]:
        raise IndexFormatError(f"{path}: {name}.faiss holds {fx.ntotal} vectors, the manifest says {entry['count']}; "
                               "rebuild the index")
    vecs = None
    if rescore_dim is not None:
        try:
            vecs = np.load(path / f"{name}.f16.npy", mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise IndexFormatError(f"{path}: {name}.f16.npy is unreadable ({e}); rebuild the index") from None
        if vecs.dtype != np.float16 or vecs.shape != (entry["count"], rescore_dim):
            raise IndexFormatError(f"{path}: {name}.f16.npy holds {vecs.dtype} {vecs.shape}, expected float16 "
                                   f"({entry['count']}, {rescore_dim}); rebuild the index")
    conn = open_sqlite_ro(path / f"{name}.sqlite")
    if keyword:
        from embedkit.retrieval.keyword import has_keyword

        if not has_keyword(conn):
            raise IndexFormatError(f"{path}: {name}.sqlite has no keyword index, the manifest says it has one; "
                                   "rebuild the index")
    return Segment(name, entry["start"], fx, conn, vecs, ivfdata=bool(entry.get("ivfdata")), saved=True)
