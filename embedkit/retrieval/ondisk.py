"""The disk-backed index (format ``embedkit.index/2``): segments that stay on disk, adds that append.

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

Keys are dense: segment *s* holds keys ``start .. start+count-1``, and a document's FAISS label inside
its segment is ``key - start``. Loading maps every file instead of reading it (RSS before the first
query is a few MB plus the coarse quantizer). ``add`` fills an in-memory segment; ``save`` into the
same folder writes only that new segment and the tombstones, then replaces ``manifest.json``
atomically, and only then deletes files no manifest references: until the new manifest is in place
the previous state stays complete and loadable, and a save killed half-way leaves files the next save
removes. ``remove`` only adds tombstones; searches skip them. Saving to another folder writes a full
copy (hard links for unchanged segments where the filesystem allows).

IVF inverted lists are written by :func:`write_ondisk_lists` with ordinary sequential writes, list
by list, from per-shard list files (or from an in-memory IVF): the same file layout FAISS'
``merge_ondisk`` produces, without holding the codes in memory or dirtying a shared mapping (whose
pages would count in the builder's RSS).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit._io import atomic_directory, atomic_save_npy, mark_output, prepare_output
from embedkit._io import fsync_path as _fsync
from embedkit._io import fsync_path as _fsync_dir
from embedkit.compression.base import check_matrix, hnsw_of, ivf_of, l2_normalize, single_thread_for_small_batches
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.compression.rescore import rescore as rescore_candidates
from embedkit.data.documents import MAX_LISTED_IDS
from embedkit.errors import EmbedkitError, IndexFormatError, IndexStateError
from embedkit.retrieval._growable import Growable
from embedkit.retrieval.docstore import SCHEMA, sqlite_readonly_uri
from embedkit.retrieval.index import DEFAULT_EF_SEARCH, EmbeddingIndex, default_nprobe
from embedkit.retrieval.manifest import (
    EMPTY_INDEX,
    FORMAT_DISK,
    MANIFEST,
    file_entries,
    read_manifest,
    write_manifest,
)

__all__ = ["DiskIndex", "ListsFile", "write_ondisk_lists", "write_shard_lists", "read_segment_index"]

logger = logging.getLogger(__name__)

#: bytes of inverted-list data held in memory at a time while merging lists
LIST_CHUNK_BYTES = 64 << 20
_LISTS_MAGIC = b"EKL1"
_OWNED = re.compile(r"^(seg-\d{5}\.(faiss|ivfdata|f16\.npy|sqlite)|removed-\d{5}\.npy)$")


# -- FAISS helpers ---------------------------------------------------------------------------------
def _is_binary(index) -> bool:
    import faiss

    return isinstance(index, faiss.IndexBinary)


def _serialize(index) -> bytes:
    import faiss

    if _is_binary(index):
        return faiss.serialize_index_binary(index).tobytes()
    return faiss.serialize_index(index).tobytes()


def _deserialize(data: bytes, binary: bool, flags: int = 0):
    import faiss

    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(np.frombuffer(data, dtype=np.uint8), reader.data)
    return faiss.read_index_binary(reader, flags) if binary else faiss.read_index(reader, flags)


def _ilod_block(nlist: int, code_size: int, lists: np.ndarray, filename: bytes, totsize: int) -> bytes:
    """FAISS' serialisation of ``OnDiskInvertedLists`` (fourcc ``ilod``): lists are (size, capacity, offset)."""
    return (b"ilod" + struct.pack("<qq", nlist, code_size) + struct.pack("<q", nlist)
            + np.ascontiguousarray(lists, dtype="<u8").tobytes() + struct.pack("<q", 0)
            + struct.pack("<q", len(filename)) + filename + struct.pack("<q", totsize))


def _split_ilod(data: bytes) -> tuple[bytes, int, int, np.ndarray, bytes, int]:
    """(header, nlist, code_size, lists, filename, totsize) of an index whose last part is an ``ilod`` block."""
    pos = data.rfind(b"ilod")
    while pos >= 0:
        try:
            nlist, code_size, n = struct.unpack_from("<qqq", data, pos + 4)
            if n == nlist and 0 < nlist < (1 << 31):
                o = pos + 28
                lists = np.frombuffer(data, dtype="<u8", count=3 * nlist, offset=o).reshape(nlist, 3)
                o += 24 * nlist
                (nslots,) = struct.unpack_from("<q", data, o)
                o += 8 + 16 * nslots
                (nfn,) = struct.unpack_from("<q", data, o)
                fname = data[o + 8: o + 8 + nfn]
                (totsize,) = struct.unpack_from("<q", data, o + 8 + nfn)
                if o + 16 + nfn == len(data) and nslots == 0:
                    return data[:pos], nlist, code_size, lists, fname, totsize
        except struct.error:
            pass
        pos = data.rfind(b"ilod", 0, pos)
    raise ValueError("no on-disk inverted lists block at the end of the index")


def _ondisk_header(index, ntotal: int) -> bytes:
    """The serialisation of trained, empty IVF ``index`` up to its inverted lists, with ``ntotal`` set."""
    import faiss

    clone = _deserialize(_serialize(index), _is_binary(index))
    ivf = ivf_of(clone)
    placeholder = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, "")
    ivf.replace_invlists(placeholder, True)
    placeholder.this.disown()
    clone.ntotal = ntotal
    ivf.ntotal = ntotal
    return _split_ilod(_serialize(clone))[0]


def read_segment_index(faiss_path: Path, ivfdata: Path | None, binary: bool):
    """Open a segment's FAISS index without reading its codes (on-disk lists or a memory map).

    Raises:
        IndexFormatError: the file is not a FAISS index of the expected kind.
    """
    import faiss

    try:
        if ivfdata is not None:
            header, nlist, cs, lists, _, totsize = _split_ilod(Path(faiss_path).read_bytes())
            if lists.size and int((lists[:, 2] + lists[:, 1] * (cs + 8)).max()) > os.path.getsize(ivfdata):
                raise ValueError(f"{ivfdata.name} is shorter than its lists")
            data = header + _ilod_block(nlist, cs, lists, os.fsencode(Path(ivfdata).absolute()), totsize)
            return _deserialize(data, binary, faiss.IO_FLAG_READ_ONLY)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
        return faiss.read_index_binary(str(faiss_path), flags) if binary else faiss.read_index(str(faiss_path), flags)
    except (RuntimeError, ValueError, struct.error) as e:
        raise IndexFormatError(f"{faiss_path}: not a readable segment index ({str(e).splitlines()[0][:160]}); "
                               "rebuild the index") from None


# -- inverted-list files ---------------------------------------------------------------------------
class ListsFile:
    """One shard's inverted lists: ``EKL1``, nlist, code_size, sizes[nlist], codes (list order), ids."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            head = f.read(20)
            if head[:4] != _LISTS_MAGIC:
                raise EmbedkitError(f"{self.path}: not an embedkit inverted-lists file")
            self.nlist, self.code_size = struct.unpack("<qq", head[4:20])
            self.sizes = np.frombuffer(f.read(8 * self.nlist), dtype="<i8").astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.total = int(self.starts[-1])
        self.codes_at = 20 + 8 * self.nlist
        self.ids_at = self.codes_at + self.total * self.code_size
        if os.path.getsize(self.path) != self.ids_at + 8 * self.total:
            raise EmbedkitError(f"{self.path}: truncated inverted-lists file; rerun the build")

    def read(self, fd: int, l0: int, l1: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes ``(n, code_size)`` and ids of lists ``l0 .. l1-1`` (positioned reads)."""
        a, b = int(self.starts[l0]), int(self.starts[l1])
        codes = np.frombuffer(os.pread(fd, (b - a) * self.code_size, self.codes_at + a * self.code_size),
                              dtype=np.uint8).reshape(b - a, self.code_size)
        ids = np.frombuffer(os.pread(fd, (b - a) * 8, self.ids_at + a * 8), dtype="<i8")
        return codes, ids


def _lists_of(index) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(sizes, codes per list, ids per list) of an in-memory IVF index."""
    import faiss

    ivf = ivf_of(index)
    il, cs = ivf.invlists, ivf.code_size
    sizes = np.array([il.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    codes, ids = [], []
    for i, n in enumerate(sizes):
        n = int(n)
        codes.append(faiss.rev_swig_ptr(il.get_codes(i), n * cs).reshape(n, cs).copy() if n else
                     np.zeros((0, cs), np.uint8))
        ids.append(faiss.rev_swig_ptr(il.get_ids(i), n).copy() if n else np.zeros(0, np.int64))
    return sizes, codes, ids


def write_shard_lists(empty_index, inputs: np.ndarray, first_label: int, path: str | os.PathLike) -> int:
    """Add one shard to a copy of the trained, empty IVF ``empty_index`` and write its lists to ``path``.

    ``inputs`` are what the FAISS index takes (floats after the spec's transforms, or packed bits);
    labels are ``first_label + row``. Returns the number of vectors. Memory: one shard's codes.
    """
    import faiss

    index = _deserialize(_serialize(empty_index), _is_binary(empty_index))
    ivf = ivf_of(index)
    ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    labels = np.arange(first_label, first_label + len(inputs), dtype=np.int64)
    index.add_with_ids(inputs, labels)
    sizes, codes, ids = _lists_of(index)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_LISTS_MAGIC + struct.pack("<qq", ivf.nlist, ivf.code_size))
        f.write(sizes.astype("<i8").tobytes())
        for c in codes:
            f.write(c.tobytes())
        for i in ids:
            f.write(i.astype("<i8").tobytes())
    os.replace(tmp, path)
    return len(inputs)


def _hashing_writer(path: Path):
    h = hashlib.sha256()
    f = open(path, "wb")  # noqa: SIM115 - closed by the caller

    def write(b: bytes) -> None:
        f.write(b)
        h.update(b)

    return f, write, h


def write_ondisk_lists(empty_index, sources, faiss_path: str | os.PathLike, ivfdata_path: str | os.PathLike) -> dict:
    """Merge inverted lists into FAISS on-disk lists: ``ivfdata_path`` + the index header ``faiss_path``.

    Args:
        empty_index: the trained, empty IVF index (float or binary) the lists belong to.
        sources: :class:`ListsFile` objects (per-shard files, merged in order), or one in-memory IVF
            index whose lists are written.

    Lists are written one chunk (about :data:`LIST_CHUNK_BYTES`) at a time with sequential writes:
    codes, then labels, per list, exactly where ``OnDiskInvertedLists`` expects them. Returns the
    ``file_entries`` of both files (hashed while writing).
    """
    faiss_path, ivfdata_path = Path(faiss_path), Path(ivfdata_path)
    ivf = ivf_of(empty_index)
    nlist, cs = int(ivf.nlist), int(ivf.code_size)
    in_memory = not isinstance(sources, (list, tuple))
    if in_memory:
        sizes, mem_codes, mem_ids = _lists_of(sources)
    else:
        for src in sources:
            if src.nlist != nlist or src.code_size != cs:
                raise EmbedkitError(f"{src.path}: lists of another index (nlist {src.nlist}, code size {src.code_size})")
        sizes = np.sum([src.sizes for src in sources], axis=0) if sources else np.zeros(nlist, np.int64)
    lists = np.zeros((nlist, 3), dtype=np.uint64)
    tmp = ivfdata_path.with_name(f".{ivfdata_path.name}.tmp")
    f, write, h = _hashing_writer(tmp)
    fds = [] if in_memory else [os.open(src.path, os.O_RDONLY) for src in sources]
    offset = 0
    try:
        l0 = 0
        while l0 < nlist:
            # a chunk of lists holding about LIST_CHUNK_BYTES
            l1, acc = l0, 0
            while l1 < nlist and (l1 == l0 or acc + int(sizes[l1]) * (cs + 8) <= LIST_CHUNK_BYTES):
                acc += int(sizes[l1]) * (cs + 8)
                l1 += 1
            if in_memory:
                parts = [(mem_codes[l0:l1], mem_ids[l0:l1])]
            else:
                parts = []
                for src, fd in zip(sources, fds):
                    codes, ids = src.read(fd, l0, l1)
                    bounds = src.starts[l0:l1 + 1] - src.starts[l0]
                    parts.append(([codes[bounds[j]:bounds[j + 1]] for j in range(l1 - l0)],
                                  [ids[bounds[j]:bounds[j + 1]] for j in range(l1 - l0)]))
            for j in range(l1 - l0):
                n = int(sizes[l0 + j])
                lists[l0 + j] = (n, n, offset)
                for codes, _ in parts:
                    if len(codes[j]):
                        write(np.ascontiguousarray(codes[j]).tobytes())
                for _, ids in parts:
                    if len(ids[j]):
                        write(np.ascontiguousarray(ids[j], dtype="<i8").tobytes())
                offset += n * (cs + 8)
            l0 = l1
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()
        for fd in fds:
            os.close(fd)
    os.replace(tmp, ivfdata_path)
    ntotal = int(sizes.sum())
    header = _ondisk_header(empty_index, ntotal)
    data = header + _ilod_block(nlist, cs, lists, os.fsencode(ivfdata_path.name), offset)
    from embedkit._io import atomic_write_bytes

    atomic_write_bytes(faiss_path, data)
    entries = file_entries(faiss_path.parent, [faiss_path.name])
    entries[ivfdata_path.name] = {"sha256": h.hexdigest(), "bytes": offset}
    if offset > (64 << 20):
        from embedkit.retrieval.manifest import sample_sha256

        entries[ivfdata_path.name]["sample_sha256"] = sample_sha256(ivfdata_path)
    return entries


# -- segments --------------------------------------------------------------------------------------
class _Segment:
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

    def id_keys(self, ids: Sequence[str]) -> list[tuple[str, int]]:
        out = []
        with self.lock:
            for s in range(0, len(ids), 500):
                chunk = list(ids[s: s + 500])
                q = f"SELECT id, key FROM docs WHERE id IN ({','.join('?' * len(chunk))})"
                out += self.conn.execute(q, chunk).fetchall()
        return out


class _SegmentDocs:
    """The docstore interface :class:`EmbeddingIndex` uses, over every segment's SQLite file."""

    def __init__(self, owner: DiskIndex):
        self.owner = owner

    def _segment_of(self, keys: np.ndarray) -> np.ndarray:
        starts = np.array([s.start for s in self.owner._segments], dtype=np.int64)
        return np.searchsorted(starts, keys, side="right") - 1

    def get(self, keys) -> dict:
        keys = np.asarray(keys, dtype=np.int64)
        out = {}
        if len(keys) == 0:
            return out
        seg_of = self._segment_of(keys)
        for si in np.unique(seg_of):
            out.update(self.owner._segments[int(si)].docs(keys[seg_of == si].tolist()))
        return out

    def ids_for_keys(self, keys) -> dict:
        return {k: v[0] for k, v in self.get(keys).items()}

    def keys_of(self, ids: Sequence[str]) -> dict[str, int]:
        found = {}
        removed = self.owner._removed
        for seg in self.owner._segments:
            for did, key in seg.id_keys(list(ids)):
                i = np.searchsorted(removed, key)
                if not (i < len(removed) and removed[i] == key):
                    found[did] = key
        return found

    def existing_ids(self, ids) -> list[str]:
        found = self.keys_of(list(ids))
        return [i for i in ids if i in found]

    def next_key(self) -> int:
        return self.owner._next_key

    def __len__(self) -> int:
        return len(self.owner)


class _AliveKeys:
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


def _open_sqlite_ro(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(sqlite_readonly_uri(path) + "&immutable=1", uri=True, check_same_thread=False)
        conn.execute("SELECT key, id, text, metadata FROM docs LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise IndexFormatError(f"{path}: not a readable embedkit docstore ({e}); rebuild the index") from None
    return conn


def _new_memory_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute(SCHEMA)
    conn.commit()
    return conn


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class DiskIndex(EmbeddingIndex):
    """An :class:`EmbeddingIndex` whose segments stay on disk (format ``embedkit.index/2``).

    Obtained from :meth:`EmbeddingIndex.load` on a disk-backed folder, from
    :func:`embedkit.retrieval.sharded.build_index_from_shards`, or by saving any index with
    ``index.save(path, layout="disk")``. Same API and thread-safety as :class:`EmbeddingIndex`;
    ``remove`` leaves tombstones (searches skip them; rebuild to reclaim the space), and ``save``
    into the folder the index came from writes only what changed.

    Example:
        .. code-block:: python

            from embedkit import EmbeddingIndex

            index = EmbeddingIndex.load("big_index")      # a DiskIndex: nothing read but headers
            index.nprobe = 64                              # more IVF lists per query
            index.add(new_texts, new_ids)
            index.save("big_index")                        # writes one new segment + the manifest
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._segments: list[_Segment] = []
        self._removed = np.zeros(0, dtype=np.int64)
        self._removed_saved = True
        self._next_key = 0
        self._folder: Path | None = None
        self._generation = 0
        self._entries: dict = {}
        self._empty_bytes: bytes | None = None
        self._docs = _SegmentDocs(self)
        self._keys = _AliveKeys(0, self._removed)

    # -- structure -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._next_key - len(self._removed)

    def _refresh_keys(self) -> None:
        self._keys = _AliveKeys(self._next_key, self._removed)

    def _proto(self):
        """A flat FaissCodeIndex of the compression: how queries become FAISS input, binary or not."""
        from embedkit.compression.base import FaissCodeIndex

        proto = self.compression.new_index("flat")
        if not isinstance(proto, FaissCodeIndex):
            raise EmbedkitError(f"spec {self.compression.spec!r} has its own search structure; the disk-backed "
                                "layout needs a spec whose codes FAISS holds (float, f16, int8, pq, opq, rabitq, "
                                "binary, lsh, itq)")
        return proto

    def _new_segment_index(self, X: np.ndarray):
        if self.backend == "ivf":
            if self._empty_bytes is None:
                raise IndexStateError("this disk-backed IVF index has no trained empty index; rebuild it")
            return _deserialize(self._empty_bytes, self._binary)
        kwargs = {"train_X": X} if self.backend != "flat" else {}
        return self.compression.new_index(self.backend, nlist=self.nlist, hnsw_m=self.hnsw_m, **kwargs).index

    # -- search parameters -----------------------------------------------------------------------
    def _faiss_ivf(self):
        if self._segments:
            return ivf_of(self._segments[0].index)
        if self._empty_bytes is not None:
            return ivf_of(_deserialize(self._empty_bytes, self._binary))
        return None

    def _apply_search_params(self) -> None:
        pass  # applied at each search: every segment is searched with the index's nprobe / ef_search

    def _segment_search(self, seg: _Segment, X, k: int):
        index = seg.index
        if self.backend == "ivf":
            ivf = ivf_of(index)
            ivf.nprobe = min(int(self._nprobe or default_nprobe(self._base_nlist)), int(ivf.nlist))
        elif self.backend == "hnsw":
            inner = hnsw_of(index)
            if inner is not None:
                inner.hnsw.efSearch = max(int(self.ef_search or DEFAULT_EF_SEARCH), k)
        with seg.lock, single_thread_for_small_batches(len(X)):
            D, labels = index.search(X, k)
        if self._binary:
            scores = 1.0 - 2.0 * D.astype(np.float32) / float(self._nbits)
        else:
            scores = D.astype(np.float32)
        return scores, labels.astype(np.int64)

    def _search_rows(self, Q, k: int, rescore: bool | None) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0:
            raise EmbedkitError("the index is empty: add documents before searching")
        self._check_not_broken()
        Q = l2_normalize(check_matrix(Q, self.dim, "query embeddings"))
        use_rescore = bool(self.rescore) and rescore is not False
        kk = min(len(self), k * (self.rescore if use_rescore else 1))
        Qt = self.compression.transform(Q)
        X = self._to_input(Qt)
        removed = self._removed
        all_s, all_k = [], []
        for seg in self._segments:
            if seg.count == 0:
                continue
            lo, hi = np.searchsorted(removed, [seg.start, seg.start + seg.count])
            kseg = min(seg.count, kk + int(hi - lo))
            s, lab = self._segment_search(seg, X, kseg)
            keys = np.where(lab >= 0, lab + seg.start, -1)
            if hi > lo:
                dead = np.isin(keys, removed[lo:hi])
                keys[dead] = -1
            s = np.where(keys >= 0, s, -np.inf).astype(np.float32)
            all_s.append(s)
            all_k.append(keys)
        S, K = np.concatenate(all_s, axis=1), np.concatenate(all_k, axis=1)
        order = np.lexsort((np.where(K >= 0, K, np.iinfo(np.int64).max), -S), axis=1)[:, :kk]
        S, K = np.take_along_axis(S, order, 1), np.take_along_axis(K, order, 1)
        K[~np.isfinite(S)] = -1
        if use_rescore:
            S, K = self._rescore(Q if self._rescore_full_dim else Qt, K, k)
        S, K = S[:, :k], K[:, :k]
        rows = np.where(K >= 0, self._keys.rows_of(np.maximum(K, 0)), -1)
        return S, rows

    def _rescore(self, Qr: np.ndarray, K: np.ndarray, k: int):
        uniq = np.unique(K[K >= 0])
        vecs = np.zeros((len(uniq), Qr.shape[1]), dtype=np.float16)
        if len(uniq):
            seg_of = self._docs._segment_of(uniq)
            for si in np.unique(seg_of):
                seg = self._segments[int(si)]
                sel = seg_of == si
                vecs[sel] = np.asarray(seg.rescore_vectors()[uniq[sel] - seg.start])
        pos = np.where(K >= 0, np.searchsorted(uniq, np.maximum(K, 0)), -1)
        scores, pos = rescore_candidates(Qr, vecs, pos, k)
        return scores, np.where(pos >= 0, uniq[np.maximum(pos, 0)] if len(uniq) else -1, -1)

    # -- writes ----------------------------------------------------------------------------------
    def _pending(self, X: np.ndarray) -> _Segment:
        last = self._segments[-1] if self._segments else None
        if last is not None and not last.saved:
            return last
        name = f"seg-{self._generation + 1:05d}"
        vecs = Growable((self.rescore_dim if not self._rescore_full_dim else self.dim,), np.float16) if self.rescore else None
        seg = _Segment(name, self._next_key, self._new_segment_index(X), _new_memory_db(), vecs, ivfdata=False,
                       saved=False)
        self._segments.append(seg)
        return seg

    def _add_locked(self, docs, X: np.ndarray) -> None:
        self._check_not_broken()
        clash = self._docs.existing_ids(docs.ids)
        if clash:
            raise EmbedkitError(f"document ids already in the index: {', '.join(map(repr, clash[:5]))}")
        if X.shape[1] != self.dim:
            raise EmbedkitError(f"document embeddings have dimension {X.shape[1]}, expected {self.dim}")
        Xt = self.compression.transform(X)
        inputs = self._to_input(Xt)
        n_segments = len(self._segments)
        seg = self._pending(Xt)
        before = seg.count
        keys = np.arange(seg.start + before, seg.start + before + len(X), dtype=np.int64)
        import json

        rows = [(int(k), i, t, json.dumps(m) if m is not None else None)
                for k, i, t, m in zip(keys, docs.ids, docs.texts, docs.metadata)]
        try:
            with seg.lock:
                try:
                    seg.conn.executemany("INSERT INTO docs (key, id, text, metadata) VALUES (?, ?, ?, ?)", rows)
                    seg.index.add(inputs)
                except BaseException:
                    seg.conn.rollback()
                    raise
                seg.conn.commit()
        except BaseException:
            if seg.count != before:
                self._broken = "a failed add could not be rolled back"
            if len(self._segments) > n_segments and seg.count == 0:
                self._segments.pop()
            raise
        if seg.vecs is not None:
            seg.vecs.append((X if self._rescore_full_dim else np.asarray(Xt)).astype(np.float16))
        self._next_key = seg.start + seg.count
        self._record_skipped(docs.skipped_ids, docs.ids)
        self._refresh_keys()

    def remove(self, ids: Sequence[str]) -> None:
        """Remove documents by id: tombstones, so searches skip them at once; ``save`` records them.

        Raises:
            EmbedkitError: an id that is not in the index (nothing is removed).
        """
        from embedkit.retrieval.index import _check_ids

        ids = _check_ids(ids)
        with self._lock.write():
            self._check_not_broken()
            found = self._docs.keys_of(ids)
            missing = [i for i in ids if i not in found]
            if missing:
                raise EmbedkitError(f"unknown document ids: {', '.join(map(repr, missing[:5]))}")
            keys = np.array(sorted(set(found.values())), dtype=np.int64)
            if len(keys):
                self._removed = np.union1d(self._removed, keys)
                self._removed_saved = False
                self._refresh_keys()

    def _counts(self) -> dict[str, int]:
        counts = {"faiss": sum(s.count for s in self._segments) - len(self._removed), "keys": len(self._keys)}
        if self.rescore:
            counts["rescore"] = sum(len(s.rescore_vectors()) for s in self._segments) - len(self._removed)
        return counts

    def check_consistency(self) -> None:
        self._check_not_broken()
        counts = self._counts()
        if len(set(counts.values())) != 1:
            raise IndexStateError(f"this index is inconsistent (document counts {counts}); "
                                  "it was not saved — load it again from disk")

    # -- persistence -----------------------------------------------------------------------------
    def _write_segment(self, folder: Path, seg: _Segment, name: str) -> dict:
        """Write an in-memory segment's files under ``name`` into ``folder``; return their file entries."""
        import faiss

        files = []
        entries = {}
        if self.backend == "ivf":
            entries.update(write_ondisk_lists(_deserialize(self._empty_bytes, self._binary), seg.index,
                                              folder / f"{name}.faiss", folder / f"{name}.ivfdata"))
        else:
            tmp = folder / f".{name}.faiss.tmp"
            if self._binary:
                faiss.write_index_binary(seg.index, str(tmp))
            else:
                faiss.write_index(seg.index, str(tmp))
            os.replace(tmp, folder / f"{name}.faiss")
            files.append(f"{name}.faiss")
        if self.rescore:
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

    def _manifest_fields(self, segments: list[dict], removed_file: str | None, generation: int, files: dict) -> dict:
        return {
            "model": self._manifest_model(),
            "spec": self.compression.spec, "backend": self.backend, "nlist": self.nlist, "hnsw_m": self.hnsw_m,
            "nprobe": self.nprobe, "ef_search": self.ef_search, "dim": self.dim, "code_size": self.bytes_per_vector,
            "count": len(self), "metric": "cosine", "rescore": self.rescore,
            "rescore_full_dim": bool(self._rescore_full_dim),
            "skipped_empty": {"count": self.skipped_count, "ids": self.skipped_ids[:MAX_LISTED_IDS]},
            "build_seconds": self.build_seconds, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "segments": segments, "removed": {"file": removed_file, "count": int(len(self._removed))},
            "generation": generation, "files": files,
        }

    def _write_all(self, folder: Path, generation: int, incremental: bool) -> tuple[dict, list[_Segment]]:
        """Write every file the new manifest needs into ``folder``; return (manifest fields, written segments)."""
        files: dict = {}
        written = []
        if not incremental:
            self.compression.save(folder, "quantizer")
            files.update(file_entries(folder, ["quantizer.json", "quantizer.npz"]))
            if self.backend == "ivf":
                from embedkit._io import atomic_write_bytes

                atomic_write_bytes(folder / EMPTY_INDEX, self._empty_bytes)
                files.update(file_entries(folder, [EMPTY_INDEX]))
        else:
            keep = ["quantizer.json", "quantizer.npz"] + ([EMPTY_INDEX] if self.backend == "ivf" else [])
            files.update({n: self._entries[n] for n in keep})
        segments = []
        for seg in self._segments:
            if seg.count == 0:
                continue
            if seg.saved:
                names = [f"{seg.name}.faiss", f"{seg.name}.sqlite"] + ([f"{seg.name}.ivfdata"] if seg.ivfdata else []) \
                    + ([f"{seg.name}.f16.npy"] if self.rescore else [])
                if not incremental:
                    for n in names:
                        _link_or_copy(self._folder / n, folder / n)
                files.update({n: self._entries[n] for n in names})
                segments.append({"name": seg.name, "start": seg.start, "count": seg.count, "ivfdata": seg.ivfdata})
            else:
                name = f"seg-{generation:05d}"
                files.update(self._write_segment(folder, seg, name))
                segments.append({"name": name, "start": seg.start, "count": seg.count,
                                 "ivfdata": self.backend == "ivf"})
                written.append(seg)
        removed_file = None
        if len(self._removed):
            old = self._entries.get("__removed_file__") if incremental and self._removed_saved else None
            if old:
                removed_file = old
                files[old] = self._entries[old]
            else:
                removed_file = f"removed-{generation:05d}.npy"
                atomic_save_npy(folder / removed_file, self._removed)
                files.update(file_entries(folder, [removed_file]))
        return self._manifest_fields(segments, removed_file, generation, files), written

    def save(self, path: str | os.PathLike, *, layout: str | None = None) -> Path:
        """Save; into the folder this index was loaded from or last saved to, only what changed.

        Crash-safe either way: an incremental save writes new files under new names and replaces
        ``manifest.json`` atomically (the previous state stays loadable until then); a save to
        another folder goes through a temporary folder renamed into place.

        Raises:
            EmbedkitError: the index is empty; ``layout="memory"`` (load the documents and build an
                in-memory index instead).
            IndexStateError: the index is inconsistent (nothing is written).
            OutputExistsError: ``path`` is a file or a folder that is not an embedkit index.
        """
        if layout not in (None, "disk"):
            raise EmbedkitError(f"a disk-backed index saves with layout='disk', not {layout!r}")
        if len(self._segments) == 0:
            raise EmbedkitError("cannot save an empty index: add documents first")
        target = prepare_output(path, "index", overwrite=True, option="index path")
        with self._lock.write():
            self.check_consistency()
            generation = self._generation + 1
            incremental = (self._folder is not None and target.exists()
                           and os.path.samefile(target, self._folder) and self._still_ours(target))
            if incremental:
                _clean_unreferenced(target, set(self._entries))
                fields, written = self._write_all(target, generation, True)
                for name in fields["files"]:
                    if name not in self._entries:
                        _fsync(target / name)
                write_manifest(target, {"format": FORMAT_DISK, **fields})
                _fsync_dir(target)
                _clean_unreferenced(target, set(fields["files"]))
            else:
                with atomic_directory(target) as tmp:
                    fields, written = self._write_all(tmp, generation, False)
                    mark_output(tmp, "index")
                    write_manifest(tmp, {"format": FORMAT_DISK, **fields})
            self._after_save(target, fields, written)
        return Path(path)

    def _still_ours(self, target: Path) -> bool:
        """The folder still holds the manifest this index was loaded from (no other writer replaced it)."""
        try:
            m = read_manifest(target, verify=False)
        except IndexFormatError:
            return False
        return m.get("format") == FORMAT_DISK and m.get("generation") == self._generation

    def _after_save(self, target: Path, fields: dict, written: list[_Segment]) -> None:
        """Point the index at what was just saved; segments written now stay searchable from memory."""
        self._folder = target.absolute()
        self._generation = fields["generation"]
        self._entries = dict(fields["files"])
        if fields["removed"]["file"]:
            self._entries["__removed_file__"] = fields["removed"]["file"]
        self._removed_saved = True
        names = {s["start"]: s["name"] for s in fields["segments"]}
        for seg in self._segments:
            seg.name = names.get(seg.start, seg.name)
        for seg in written:
            seg.saved, seg.ivfdata = True, self.backend == "ivf"

    @classmethod
    def from_manifest(cls, path: Path, manifest: dict, *, force: bool = False) -> DiskIndex:
        """Open the disk-backed index folder ``path`` whose checked manifest is ``manifest``."""
        index = cls._from_manifest_fields(path, manifest, force=force)
        index._rescore_full_dim = bool(manifest.get("rescore_full_dim", False))
        try:
            index.compression = CompressionPipeline.load(path, "quantizer")
            index._init_codec()
            if index.backend == "ivf":
                index._empty_bytes = (path / EMPTY_INDEX).read_bytes()
                _deserialize(index._empty_bytes, index._binary)
        except (RuntimeError, EmbedkitError, KeyError, ValueError, TypeError) as e:
            raise IndexFormatError(f"{path}: cannot read the index ({str(e).splitlines()[0][:200]}); rebuild it") from e
        for s in manifest["segments"]:
            name = s["name"]
            fx = read_segment_index(path / f"{name}.faiss", path / f"{name}.ivfdata" if s.get("ivfdata") else None,
                                    index._binary)
            if fx.ntotal != s["count"]:
                raise IndexFormatError(f"{path}: {name}.faiss holds {fx.ntotal} vectors, the manifest says {s['count']}; "
                                       "rebuild the index")
            vecs = None
            if index.rescore:
                try:
                    vecs = np.load(path / f"{name}.f16.npy", mmap_mode="r", allow_pickle=False)
                except ValueError as e:
                    raise IndexFormatError(f"{path}: {name}.f16.npy is unreadable ({e}); rebuild the index") from None
                want = index.dim if index._rescore_full_dim else index.rescore_dim
                if vecs.dtype != np.float16 or vecs.shape != (s["count"], want):
                    raise IndexFormatError(f"{path}: {name}.f16.npy holds {vecs.dtype} {vecs.shape}, expected float16 "
                                           f"({s['count']}, {want}); rebuild the index")
            conn = _open_sqlite_ro(path / f"{name}.sqlite")
            index._segments.append(_Segment(name, s["start"], fx, conn, vecs, ivfdata=bool(s.get("ivfdata")),
                                            saved=True))
        rf = manifest["removed"]["file"]
        if rf is not None:
            try:
                removed = np.load(path / rf, allow_pickle=False)
            except ValueError as e:
                raise IndexFormatError(f"{path}: {rf} is unreadable ({e}); rebuild the index") from None
            if removed.dtype != np.int64 or removed.ndim != 1 or len(removed) != manifest["removed"]["count"]:
                raise IndexFormatError(f"{path}: {rf} does not hold {manifest['removed']['count']} keys; rebuild the index")
            index._removed = removed
        last = manifest["segments"][-1]
        index._next_key = last["start"] + last["count"]
        index._refresh_keys()
        index._folder = path.absolute()
        index._generation = manifest["generation"]
        index._entries = dict(manifest["files"])
        if rf is not None:
            index._entries["__removed_file__"] = rf
        return index

    @property
    def _base_nlist(self) -> int:
        ivf = self._faiss_ivf()
        return 1 if ivf is None else int(ivf.nlist)

    def _init_codec(self) -> None:
        proto = self._proto()
        self._to_input = proto.to_input
        self._binary = bool(proto.binary)
        self._nbits = int(proto.nbits)

    @classmethod
    def from_memory(cls, mem: EmbeddingIndex) -> DiskIndex:
        """A disk-backed index holding everything of the in-memory index ``mem`` (one unsaved segment)."""
        import faiss

        if mem._code_index is None:
            raise EmbedkitError("cannot convert an empty index: add documents first")
        idx = cls(None, mem.spec, backend=mem.backend, rescore=mem.rescore, nlist=mem.nlist, hnsw_m=mem.hnsw_m,
                  nprobe=mem.nprobe, ef_search=mem.ef_search)
        idx.compression, idx.dim = mem.compression, mem.dim
        idx._model, idx.model_source, idx.model_fingerprint = mem._model, mem.model_source, mem.model_fingerprint
        idx.skipped_ids, idx.skipped_count, idx.build_seconds = list(mem.skipped_ids), mem.skipped_count, mem.build_seconds
        idx._rescore_full_dim = mem._rescore_full_dim
        idx._init_codec()
        with mem._lock.read():
            src = mem._code_index.index
            fx = _deserialize(_serialize(src), idx._binary)
            if idx.backend == "ivf":
                empty = _deserialize(_serialize(src), idx._binary)
                ivf_of(empty).set_direct_map_type(faiss.DirectMap.NoMap)
                empty.reset()
                idx._empty_bytes = _serialize(empty)
            conn = _new_memory_db()
            rows = mem._docs.conn.execute("SELECT id, text, metadata FROM docs ORDER BY key").fetchall()
            conn.executemany("INSERT INTO docs (key, id, text, metadata) VALUES (?, ?, ?, ?)",
                             [(i, *r) for i, r in enumerate(rows)])
            conn.commit()
            vecs = None
            if idx.rescore:
                vecs = Growable((mem._rescore_vecs.shape[1],), np.float16)
                vecs.append(np.asarray(mem._rescore_vecs))
        idx._segments.append(_Segment("seg-00001", 0, fx, conn, vecs, ivfdata=False, saved=False))
        idx._next_key = fx.ntotal
        idx._refresh_keys()
        return idx




def _clean_unreferenced(folder: Path, referenced: set[str]) -> None:
    """Delete segment/tombstone files and temporary files no manifest references (left by earlier saves)."""
    for entry in os.scandir(folder):
        name = entry.name
        if name in referenced or name == MANIFEST:
            continue
        if _OWNED.match(name) or (name.startswith(".seg-") and name.endswith(".tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def load_disk_index(path: Path, manifest: dict, model=None, *, force: bool = False) -> DiskIndex:
    """Open a disk-backed index (called by :meth:`EmbeddingIndex.load`) and check the model."""
    index = DiskIndex.from_manifest(path, manifest, force=force)
    if model is not None:
        index._check_model(model, force)
    return index

