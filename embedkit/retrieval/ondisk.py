"""The disk-backed index (format ``embedkit.index/2``): segments that stay on disk, adds that append.

The folder's files are listed in :mod:`~embedkit.retrieval.segments` (segments, tombstones); the
inverted-list files and their writer are in :mod:`~embedkit.retrieval.lists`.

Keys are dense: segment *s* holds keys ``start .. start+count-1``, and a document's FAISS label inside
its segment is ``key - start``. Loading maps every file instead of reading it (RSS before the first
query is a few MB plus the coarse quantizer). ``add`` fills an in-memory segment; ``save`` into the
same folder writes only that new segment and the tombstones, then replaces ``manifest.json``
atomically, and only then deletes files no manifest references: until the new manifest is in place
the previous state stays complete and loadable, and a save killed half-way leaves files the next save
removes. ``remove`` only adds tombstones; searches skip them. Saving to another folder writes a full
copy (hard links for unchanged segments where the filesystem allows).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit._io import atomic_directory, atomic_save_npy, atomic_write_bytes, fsync_path, mark_output, prepare_output
from embedkit.compression.base import (
    check_matrix,
    faiss_scores,
    hnsw_of,
    ivf_of,
    l2_normalize,
    single_thread_for_small_batches,
)
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.data.documents import MAX_LISTED_IDS
from embedkit.errors import EmbedkitError, IndexFormatError, IndexStateError
from embedkit.retrieval._growable import Growable
from embedkit.retrieval.base import IndexBase
from embedkit.retrieval.common import DEFAULT_EF_SEARCH, check_ids, default_nprobe
from embedkit.retrieval.filters import filtered_faiss_search
from embedkit.retrieval.lists import (
    ListsFile,
    deserialize_index,
    read_segment_index,
    serialize_index,
    write_ondisk_lists,
    write_shard_lists,
)
from embedkit.retrieval.manifest import EMPTY_INDEX, FORMAT_DISK, file_entries, read_manifest, write_manifest
from embedkit.retrieval.segments import (
    AliveKeys,
    Segment,
    SegmentDocs,
    SegmentState,
    clean_unreferenced,
    link_or_copy,
    new_memory_db,
    open_segment,
    write_segment,
)

__all__ = ["DiskIndex", "ListsFile", "read_segment_index", "write_ondisk_lists", "write_shard_lists"]


class DiskIndex(IndexBase):
    """An index whose segments stay on disk (format ``embedkit.index/2``).

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
        self._state = SegmentState()
        self._removed_saved = True
        self._folder: Path | None = None
        self._generation = 0
        self._entries: dict = {}
        self._empty_bytes: bytes | None = None
        self._docs = SegmentDocs(self._state)
        self._keys = AliveKeys(0, self._removed)

    # -- the segment state (one object, shared with the docstore view) ---------------------------------
    @property
    def _segments(self) -> list[Segment]:
        return self._state.segments

    @property
    def _removed(self) -> np.ndarray:
        return self._state.removed

    @_removed.setter
    def _removed(self, value: np.ndarray) -> None:
        self._state.removed = value

    @property
    def _next_key(self) -> int:
        return self._state.next_key

    @_next_key.setter
    def _next_key(self, value: int) -> None:
        self._state.next_key = int(value)

    # -- structure -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._next_key - len(self._removed)

    def _refresh_keys(self) -> None:
        self._keys = AliveKeys(self._next_key, self._removed)

    def _proto(self):
        """A flat FaissCodeIndex of the compression: how queries become FAISS input, binary or not."""
        from embedkit.compression.spec import FAISS_HELD, OWN_SEARCH

        if self.compression.quantizer.name in OWN_SEARCH:
            raise EmbedkitError(f"spec {self.compression.spec!r} has its own search structure; the disk-backed "
                                f"layout needs a spec whose codes FAISS holds ({', '.join(FAISS_HELD)})")
        return self.compression.new_index("flat")

    def _new_segment_index(self, X: np.ndarray):
        if self.backend == "ivf":
            if self._empty_bytes is None:
                raise IndexStateError("this disk-backed IVF index has no trained empty index; rebuild it")
            return deserialize_index(self._empty_bytes, self._binary)
        kwargs = {"train_X": X} if self.backend != "flat" else {}
        return self.compression.new_index(self.backend, nlist=self.nlist, hnsw_m=self.hnsw_m, **kwargs).index

    # -- search parameters -----------------------------------------------------------------------
    def _faiss_ivf(self):
        if self._segments:
            return ivf_of(self._segments[0].index)
        if self._empty_bytes is not None:
            return ivf_of(deserialize_index(self._empty_bytes, self._binary))
        return None

    def _apply_search_params(self) -> None:
        pass  # applied at each search: every segment is searched with the index's nprobe / ef_search

    def _segment_search(self, seg: Segment, X, k: int, labels: np.ndarray | None = None):
        """(scores, labels) of one segment, among ``labels`` if given (a metadata filter)."""
        index = seg.index
        nprobe = ef = None
        if self.backend == "ivf":
            ivf = ivf_of(index)
            ivf.nprobe = nprobe = min(int(self._nprobe or default_nprobe(self._base_nlist)), int(ivf.nlist))
        elif self.backend == "hnsw":
            inner = hnsw_of(index)
            if inner is not None:
                inner.hnsw.efSearch = ef = max(int(self.ef_search or DEFAULT_EF_SEARCH), k)
        with seg.lock, single_thread_for_small_batches(len(X)):
            if labels is None:
                D, found = index.search(X, k)
            else:
                D, found = filtered_faiss_search(index, X, k, labels, backend=self.backend, nprobe=nprobe, ef_search=ef)
        return faiss_scores(D, self._binary, self._nbits), found.astype(np.int64)

    def _search_rows(self, Q, k: int, rescore: bool | None, allowed: np.ndarray | None = None):
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
            labels = None
            if allowed is not None:  # a filter: its keys in this segment (never removed ones)
                a, b = np.searchsorted(allowed, [seg.start, seg.start + seg.count])
                labels, hi = allowed[a:b] - seg.start, lo
                if len(labels) == 0:
                    continue
                kseg = min(kk, len(labels))
            s, lab = self._segment_search(seg, X, kseg, labels)
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
            S, K = self._state.rescore(Q if self._rescore_full_dim else Qt, K, k)
        S, K = S[:, :k], K[:, :k]
        rows = np.where(K >= 0, self._keys.rows_of(np.maximum(K, 0)), -1)
        return S, rows

    # -- writes ----------------------------------------------------------------------------------
    def _pending(self, X: np.ndarray) -> Segment:
        last = self._segments[-1] if self._segments else None
        if last is not None and not last.saved:
            return last
        name = f"seg-{self._generation + 1:05d}"
        vecs = Growable((self.rescore_dim if not self._rescore_full_dim else self.dim,), np.float16) if self.rescore else None
        seg = Segment(name, self._next_key, self._new_segment_index(X), new_memory_db(self.keyword), vecs, ivfdata=False,
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
        ids = check_ids(ids)
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
    def _manifest_fields(self, segments: list[dict], removed_file: str | None, generation: int, files: dict) -> dict:
        return {
            "model": self._manifest_model(),
            "spec": self.compression.spec, "backend": self.backend, "nlist": self.nlist, "hnsw_m": self.hnsw_m,
            "nprobe": self.nprobe, "ef_search": self.ef_search, "dim": self.dim, "code_size": self.bytes_per_vector,
            "count": len(self), "metric": "cosine", "rescore": self.rescore, "keyword": self.keyword,
            "rescore_full_dim": bool(self._rescore_full_dim),
            "skipped_empty": {"count": self.skipped_count, "ids": self.skipped_ids[:MAX_LISTED_IDS]},
            "build_seconds": self.build_seconds, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "segments": segments, "removed": {"file": removed_file, "count": int(len(self._removed))},
            "generation": generation, "files": files,
        }

    def _write_all(self, folder: Path, generation: int, incremental: bool) -> tuple[dict, list[Segment]]:
        """Write every file the new manifest needs into ``folder``; return (manifest fields, written segments)."""
        files: dict = {}
        written = []
        if not incremental:
            self.compression.save(folder, "quantizer")
            files.update(file_entries(folder, ["quantizer.json", "quantizer.npz"]))
            if self.backend == "ivf":
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
                        link_or_copy(self._folder / n, folder / n)
                files.update({n: self._entries[n] for n in names})
                segments.append({"name": seg.name, "start": seg.start, "count": seg.count, "ivfdata": seg.ivfdata})
            else:
                name = f"seg-{generation:05d}"
                files.update(write_segment(folder, seg, name, backend=self.backend, binary=self._binary,
                                           empty_index=self._empty_bytes, rescore=bool(self.rescore)))
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
                clean_unreferenced(target, set(self._entries))
                fields, written = self._write_all(target, generation, True)
                for name in fields["files"]:
                    if name not in self._entries:
                        fsync_path(target / name)
                write_manifest(target, {"format": FORMAT_DISK, **fields})
                fsync_path(target)
                clean_unreferenced(target, set(fields["files"]))
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

    def _after_save(self, target: Path, fields: dict, written: list[Segment]) -> None:
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
                deserialize_index(index._empty_bytes, index._binary)
        except (RuntimeError, EmbedkitError, KeyError, ValueError, TypeError) as e:
            raise IndexFormatError(f"{path}: cannot read the index ({str(e).splitlines()[0][:200]}); rebuild it") from e
        want = index.dim if index._rescore_full_dim else index.rescore_dim
        for s in manifest["segments"]:
            index._segments.append(open_segment(path, s, binary=index._binary, keyword=index.keyword,
                                                rescore_dim=want if index.rescore else None))
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
    def from_memory(cls, mem: IndexBase) -> DiskIndex:
        """A disk-backed index holding everything of the in-memory index ``mem`` (one unsaved segment)."""
        import faiss

        if mem._code_index is None:
            raise EmbedkitError("cannot convert an empty index: add documents first")
        idx = cls(None, mem.spec, index_type=mem.index_type, rescore=mem.rescore, nlist=mem.nlist, hnsw_m=mem.hnsw_m,
                  nprobe=mem.nprobe, ef_search=mem.ef_search, keyword=mem.keyword)
        idx.compression, idx.dim = mem.compression, mem.dim
        idx._model, idx.model_source, idx.model_fingerprint = mem._model, mem.model_source, mem.model_fingerprint
        idx.model_weights, idx.model_options = mem.model_weights, dict(mem.model_options)
        idx.skipped_ids, idx.skipped_count, idx.build_seconds = list(mem.skipped_ids), mem.skipped_count, mem.build_seconds
        idx._rescore_full_dim = mem._rescore_full_dim
        idx._init_codec()
        with mem._lock.read():
            src = mem._code_index.index
            fx = deserialize_index(serialize_index(src), idx._binary)
            if idx.backend == "ivf":
                empty = deserialize_index(serialize_index(src), idx._binary)
                ivf_of(empty).set_direct_map_type(faiss.DirectMap.NoMap)
                empty.reset()
                idx._empty_bytes = serialize_index(empty)
            conn = new_memory_db(idx.keyword)
            rows = mem._docs.conn.execute("SELECT id, text, metadata FROM docs ORDER BY key").fetchall()
            conn.executemany("INSERT INTO docs (key, id, text, metadata) VALUES (?, ?, ?, ?)",
                             [(i, *r) for i, r in enumerate(rows)])
            conn.commit()
            vecs = None
            if idx.rescore:
                vecs = Growable((mem._rescore_vecs.shape[1],), np.float16)
                vecs.append(np.asarray(mem._rescore_vecs))
        idx._segments.append(Segment("seg-00001", 0, fx, conn, vecs, ivfdata=False, saved=False))
        idx._next_key = fx.ntotal
        idx._refresh_keys()
        return idx
