"""EmbeddingIndex: a corpus turned into a compressed, searchable, persistent FAISS index.

Folder layout written by :meth:`EmbeddingIndex.save` (atomically: a temporary folder renamed into
place, so a crash never leaves a half-written index; see :mod:`embedkit.retrieval.manifest`)::

    INDEX/
      manifest.json        format, model (source + fingerprint), spec, backend, dim, count, metric,
                           rescore factor, skipped empty documents, build time, sha256 + size of
                           every file, its own checksum
      quantizer.json       compression stages (spec + per-stage config)
      quantizer.npz        learned parameters (numpy arrays, no pickle)
      index.faiss          the FAISS index over the codes (FAISS' own serialisation)
      rescore.f16.npy      optional float16 vectors for rescoring (memory-mapped on load)
      docs.sqlite          key, id, text, metadata (JSON)
      embedkit-output.json marks the folder as an embedkit index (what ``save`` may replace)

Large corpora use the disk-backed layout (format ``embedkit.index/2``, :mod:`embedkit.retrieval.ondisk`):
``EmbeddingIndex.load`` returns a :class:`~embedkit.retrieval.ondisk.DiskIndex` for such a folder, and
``save(path, layout="disk")`` writes any index in it.

Search effort: ``nprobe`` (IVF lists visited per query) and ``ef_search`` (HNSW candidate list) are
constructor/``build`` arguments, recorded in the manifest and settable on a loaded index
(``index.nprobe = 64``). Their defaults (:func:`default_nprobe`, :data:`DEFAULT_EF_SEARCH`) were
measured on real sentence embeddings to keep recall@10 near exact search (see ``docs/scaling.md``).

Threads: any number of threads may search while one thread adds or removes documents. A readers-writer
lock makes every search see the index as it was before or after a write, never in between.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit._io import atomic_directory, atomic_save_npy, mark_output, prepare_output, recover_directory
from embedkit.compression.base import check_matrix, hnsw_of, ivf_of, l2_normalize
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.compression.rescore import rescore as rescore_candidates
from embedkit.data.documents import MAX_LISTED_IDS
from embedkit.errors import EmbedkitError, IndexFormatError, IndexStateError
from embedkit.retrieval._growable import Growable
from embedkit.retrieval.base import IndexBase, resolve_index_type
from embedkit.retrieval.common import DEFAULT_EF_SEARCH, Hit, check_ids, default_nprobe
from embedkit.retrieval.docstore import DocStore
from embedkit.retrieval.filters import filtered_code_search
from embedkit.retrieval.keyword import has_keyword
from embedkit.retrieval.manifest import (
    FORMAT,
    RESCORE_FILE,
    directory_size,
    expected_files,
    file_entries,
    read_manifest,
    write_manifest,
)
from embedkit.retrieval.ondisk import DiskIndex

__all__ = ["EmbeddingIndex", "Hit", "FORMAT", "directory_size", "DEFAULT_EF_SEARCH", "default_nprobe"]


class EmbeddingIndex(IndexBase):
    """Encode, compress and index a corpus; search it; save and load it (in memory, format ``embedkit.index/1``).

    Args:
        model: a SentenceTransformer, a model path/name, or ``None`` for the default
            all-MiniLM-L6-v2 (loaded when first needed).
        spec: compression spec string (see :mod:`embedkit.compression.spec`), e.g. ``"binary"``.
        index_type: the FAISS structure over the codes: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"``
            (``backend=`` is its deprecated old name; the encoder runtime is chosen when loading the model,
            ``load_encoder(backend="onnx-int8")``).
        rescore: oversampling factor for float16 rescoring (e.g. 4: fetch 4k candidates by code,
            rescore them with float16 vectors, keep k); ``None`` keeps no rescoring vectors.
        nlist: IVF list count (default about 4*sqrt(n)); at most the number of documents.
        hnsw_m: HNSW graph degree.
        nprobe: IVF lists visited per query (default :func:`default_nprobe` of ``nlist``); settable
            later (``index.nprobe = 64``).
        ef_search: HNSW search breadth (default :data:`DEFAULT_EF_SEARCH`); settable later.

    Raises:
        EmbedkitError: an unknown index type, ``rescore``/``nlist`` < 1 or not whole numbers.
        SpecError: a spec that does not parse.

    Thread safety: many threads may search while one thread adds or removes; every search sees the
    index before or after a write, never in between.

    Example:
        .. code-block:: python

            from embedkit import EmbeddingIndex

            index = EmbeddingIndex.build(["a cat sat", "stock prices fell"], spec="binary", rescore=4)
            index.search("kitten", k=1)[0].text      # 'a cat sat'
            index.save("my_index")
            index = EmbeddingIndex.load("my_index")
    """

    def __init__(self, model=None, spec: str = "float", *, index_type: str | None = None, rescore: int | None = None,
                 nlist: int | None = None, hnsw_m: int = 32, nprobe: int | None = None, ef_search: int | None = None,
                 backend: str | None = None, keyword: bool = True):
        super().__init__(model, spec, index_type=resolve_index_type(index_type, backend), rescore=rescore,
                         nlist=nlist, hnsw_m=hnsw_m, nprobe=nprobe, ef_search=ef_search, keyword=keyword)
        self._code_index = None
        self._docs = DocStore(keyword=self.keyword)
        self._keys = np.zeros(0, dtype=np.int64)
        self._rescore_vecs: np.ndarray | None = None
        # spare capacity behind _keys and _rescore_vecs (None until the first add after a load or
        # remove): an add appends in place instead of copying every earlier row
        self._keys_grow: Growable | None = None
        self._rescore_grow: Growable | None = None

    @classmethod
    def build(cls, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict | None] | None = None,
              *, model=None, spec: str = "float", index_type: str | None = None, rescore: int | None = None,
              embeddings: np.ndarray | None = None, nlist: int | None = None, hnsw_m: int = 32,
              batch_size: int = 64, show_progress: bool = True, cache=None, on_empty: str = "skip",
              nprobe: int | None = None, ef_search: int | None = None, backend: str | None = None,
              keyword: bool = True, fit_pairs: Sequence[tuple[str, str]] | None = None) -> EmbeddingIndex:
        """Encode ``texts`` (through the embedding cache), fit the compression, index everything.

        ``keyword`` (default True) also keeps the BM25 keyword index of the texts in the docstore
        (``search(mode="keyword" | "hybrid")``); measured on SciFact's 5,183 abstracts it adds 0.95 s to
        the build and 3.0 MB to the docstore (docs/retrieval.md).

        Blank documents are skipped with a warning (``on_empty="skip"``) or refused
        (``on_empty="error"``); see :meth:`add`.

        ``fit_pairs``: ``(query text, relevant document id)`` pairs (e.g. from
        :func:`embedkit.data.read_retrieval_pairs`) for a codec that learns from them (``bebr``: its
        query-document InfoNCE and held-out pair recall); the queries are encoded as search encodes them,
        the documents' vectors are the indexed ones.
        """
        t0 = time.perf_counter()
        index = cls(model, spec, index_type=resolve_index_type(index_type, backend), rescore=rescore, nlist=nlist,
                    hnsw_m=hnsw_m, nprobe=nprobe, ef_search=ef_search, keyword=keyword)
        if fit_pairs is not None:
            if not getattr(index.compression.quantizer, "accepts_pairs", False):
                raise EmbedkitError(f"spec {index.compression.spec!r} does not learn from query-document pairs; "
                                    "fit pairs are used by bebr only")
            index._fit_pairs = list(fit_pairs)
        index.add(texts, ids, metadata, embeddings=embeddings, batch_size=batch_size, show_progress=show_progress,
                  cache=cache, on_empty=on_empty)
        index.build_seconds = time.perf_counter() - t0
        return index

    def __len__(self) -> int:
        return len(self._keys)

    def _pair_vectors(self, ids: Sequence[str], X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``fit_pairs`` given to :meth:`build` as (query vectors, document vectors), or None."""
        pairs = getattr(self, "_fit_pairs", None)
        if not pairs:
            return None
        row = {d: i for i, d in enumerate(ids)}
        missing = [d for _, d in pairs if d not in row]
        if missing:
            raise EmbedkitError(f"fit pairs: document id {missing[0]!r} is not among the indexed documents "
                                f"({len(missing)} such pairs)")
        Q = self.encode_queries([q for q, _ in pairs])
        return l2_normalize(check_matrix(Q, self.dim, "fit pair queries")), X[[row[d] for _, d in pairs]]

    def _faiss_ivf(self):
        index = getattr(self._code_index, "index", None)
        return None if index is None else ivf_of(index)

    def _apply_search_params(self) -> None:
        """Set nprobe / efSearch on the FAISS index (searches then use at least these)."""
        index = getattr(self._code_index, "index", None)
        if index is None:
            return
        self._code_index.fixed_search_params = True  # the index's nprobe / ef_search, not the bare floors
        if self.backend == "ivf":
            ivf = self._faiss_ivf()
            if ivf is not None:
                ivf.nprobe = min(int(self.nprobe), int(ivf.nlist))
        elif self.backend == "hnsw":
            inner = hnsw_of(index)
            if inner is not None:
                inner.hnsw.efSearch = int(self.ef_search)

    def _add_locked(self, docs, X: np.ndarray) -> None:
        self._check_not_broken()
        clash = self._docs.existing_ids(docs.ids)
        if clash:
            raise EmbedkitError(f"document ids already in the index: {', '.join(map(repr, clash[:5]))}")
        first = self._code_index is None
        if first:
            if self.backend == "ivf" and self.nlist is not None and self.nlist > len(X):
                raise EmbedkitError(
                    f"nlist {self.nlist} is larger than the {len(X)} documents to index; use nlist <= {len(X)} "
                    "(--nlist), or leave it unset for about 4*sqrt(n) lists")
            compression = copy.deepcopy(self.compression).fit(X, pairs=self._pair_vectors(docs.ids, X))
            code_index = compression.new_index(self.backend, nlist=self.nlist, hnsw_m=self.hnsw_m, train_X=X)
        else:
            if X.shape[1] != self.dim:
                raise EmbedkitError(f"document embeddings have dimension {X.shape[1]}, expected {self.dim}")
            compression, code_index = self.compression, self._code_index
        codes = compression.transform(X)
        start = self._docs.next_key()
        keys = np.arange(start, start + len(X), dtype=np.int64)
        # appended in place past the rows readers see (amortised doubling: many small adds stay linear)
        if self._keys_grow is None:
            self._keys_grow = Growable.from_array(self._keys)
        n_before = len(self._keys)
        self._keys_grow.append(keys)
        new_keys = self._keys_grow.view()
        new_vecs = self._rescore_vecs
        if self.rescore:
            # rescoring vectors live at the spec's dimension (mrl:128 -> 128-d), so their bytes are what the
            # spec promises; the rescoring query goes through the same float transforms
            f16 = (X if self._rescore_full_dim else np.asarray(codes)).astype(np.float16)
            if self._rescore_grow is None:
                self._rescore_grow = Growable.from_array(
                    np.zeros((0, f16.shape[1]), np.float16) if self._rescore_vecs is None else self._rescore_vecs)
            self._rescore_grow.append(f16)
            new_vecs = self._rescore_grow.view()
        before = code_index.ntotal
        try:
            with self._docs.transaction():
                self._docs.insert(keys.tolist(), docs.ids, docs.texts, docs.metadata)
                code_index.add(codes)
        except BaseException:
            self._undo_add(code_index, before, first)
            self._keys_grow.truncate(n_before)
            if self._rescore_grow is not None:
                self._rescore_grow.truncate(n_before)
            raise
        # nothing below can fail: the new state becomes visible to the next reader at once
        if first:
            self.compression, self._code_index, self.dim = compression, code_index, int(X.shape[1])
            self._apply_search_params()
        self._keys = new_keys
        self._rescore_vecs = new_vecs
        self._record_skipped(docs.skipped_ids, docs.ids)

    def _undo_add(self, code_index, before: int, first: bool) -> None:
        if first or code_index.ntotal == before:
            return
        try:
            code_index.remove(np.arange(before, code_index.ntotal, dtype=np.int64))
        except Exception as e:  # pragma: no cover - FAISS failing twice
            self._broken = f"a failed add could not be rolled back ({e})"
        if code_index.ntotal != before:  # pragma: no cover
            self._broken = "a failed add could not be rolled back"

    def remove(self, ids: Sequence[str]) -> None:
        """Remove documents by id; they never come back in results, and are gone from disk after save.

        All or nothing: an unknown id refuses the whole call; a failure while removing restores the
        previous state. Once ``remove`` returns, no search (from any thread) returns these ids.

        Raises:
            EmbedkitError: an id that is not in the index.
        """
        ids = check_ids(ids)
        with self._lock.write():
            self._check_not_broken()
            if self._code_index is None:
                raise EmbedkitError(f"unknown document ids: {', '.join(map(repr, ids[:5]))} (the index is empty)")
            found = self._docs.keys_of(ids)
            missing = [i for i in ids if i not in found]
            if missing:
                raise EmbedkitError(f"unknown document ids: {', '.join(map(repr, missing[:5]))}")
            keys = np.array(sorted(set(found.values())), dtype=np.int64)
            if len(keys) == 0:
                return
            rows = np.searchsorted(self._keys, keys)
            new_keys = np.delete(self._keys, rows)
            new_vecs = None if self._rescore_vecs is None else np.delete(np.asarray(self._rescore_vecs), rows, axis=0)
            # flat indexes remove in place or not at all; the others rebuild, so keep a copy to roll back to
            backup = self._code_index.to_bytes() if self.backend != "flat" else None
            n_before = self._code_index.ntotal
            try:
                with self._docs.transaction():
                    self._docs.delete(keys.tolist())
                    self._code_index.remove(rows)
            except BaseException:
                if backup is not None:
                    self._code_index = self.compression.index_from_bytes(backup, self.backend)
                elif self._code_index.ntotal != n_before:  # pragma: no cover
                    self._broken = "a failed remove could not be rolled back"
                raise
            self._keys = new_keys
            self._rescore_vecs = new_vecs
            self._keys_grow = self._rescore_grow = None

    def _counts(self) -> dict[str, int]:
        counts = {"faiss": 0 if self._code_index is None else int(self._code_index.ntotal),
                  "keys": len(self._keys), "docs": len(self._docs)}
        if self._rescore_vecs is not None:
            counts["rescore"] = len(self._rescore_vecs)
        return counts

    def check_consistency(self) -> None:
        """Raise :class:`IndexStateError` unless FAISS, the docstore and the rescoring vectors agree."""
        self._check_not_broken()
        counts = self._counts()
        if len(set(counts.values())) != 1:
            raise IndexStateError(f"this index is inconsistent (document counts {counts}); "
                                  "it was not saved — load it again from disk")
        if self.rescore and self._rescore_vecs is None:
            raise IndexStateError("this index is inconsistent (rescoring vectors missing); load it again from disk")

    def _search_rows(self, Q, k: int, rescore: bool | None, allowed: np.ndarray | None = None):
        """(scores, rows), among the document keys ``allowed`` if given; the caller holds the read lock."""
        if self._code_index is None or len(self._keys) == 0:
            raise EmbedkitError("the index is empty: add documents before searching")
        self._check_not_broken()
        Q = l2_normalize(check_matrix(Q, self.dim, "query embeddings"))
        vecs = self._rescore_vecs
        use_rescore = vecs is not None and rescore is not False
        kk = min(len(self._keys), k * (self.rescore if use_rescore else 1))
        Qt = self.compression.transform(Q)
        if allowed is None:
            scores, rows = self._code_index.search(Qt, kk)
        else:
            scores, rows = filtered_code_search(self._code_index, Qt, min(kk, len(allowed)),
                                                np.searchsorted(self._keys, allowed), nprobe=self.nprobe,
                                                ef_search=self.ef_search)
        if use_rescore:
            scores, rows = rescore_candidates(Q if self._rescore_full_dim else Qt, vecs, rows, k)
        return scores[:, :k], rows[:, :k]

    def save(self, path: str | os.PathLike, *, layout: str | None = None) -> Path:
        """Write the index folder atomically (temporary folder + recoverable rename).

        ``path`` may be new, an empty folder, or an embedkit index (replaced); anything else is
        refused, so nothing the user had is lost.

        Args:
            layout: ``None``/``"memory"``: the in-memory format (``embedkit.index/1``); ``"disk"``:
                the disk-backed format (:class:`~embedkit.retrieval.ondisk.DiskIndex`: loads by
                memory-mapping, later saves write only what changed).

        Raises:
            EmbedkitError: the index is empty.
            IndexStateError: the index is inconsistent (nothing is written).
            OutputExistsError: ``path`` is a file or a folder that is not an embedkit index.
        """
        if self._code_index is None:
            raise EmbedkitError("cannot save an empty index: add documents first")
        if layout not in (None, "memory", "disk"):
            raise EmbedkitError(f"layout must be 'memory' or 'disk', not {layout!r}")
        if layout == "disk":
            with self._lock.read():
                self.check_consistency()
                disk = DiskIndex.from_memory(self)
            return disk.save(path)
        target = prepare_output(path, "index", overwrite=True, option="index path")
        with self._lock.read():
            self.check_consistency()
            with atomic_directory(target) as tmp:
                self.compression.save(tmp, "quantizer")
                (tmp / "index.faiss").write_bytes(self._code_index.to_bytes())
                if self.rescore:
                    atomic_save_npy(tmp / RESCORE_FILE, np.asarray(self._rescore_vecs, dtype=np.float16))
                self._docs.save(tmp / "docs.sqlite")
                mark_output(tmp, "index")
                write_manifest(tmp, {
                    "model": self._manifest_model(),
                    "spec": self.compression.spec,
                    "backend": self.backend,
                    "nlist": self.nlist,
                    "hnsw_m": self.hnsw_m,
                    "nprobe": self._nprobe,
                    "ef_search": self._ef_search,
                    "dim": self.dim,
                    "code_size": self.bytes_per_vector,
                    "count": len(self),
                    "metric": "cosine",
                    "rescore": self.rescore,
                    "keyword": self.keyword,
                    "skipped_empty": {"count": self.skipped_count, "ids": self.skipped_ids[:MAX_LISTED_IDS]},
                    "build_seconds": self.build_seconds,
                    **({"tuning": self.tuning} if self.tuning else {}),
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "files": file_entries(tmp, expected_files(self.rescore)),
                })
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, model=None, *, force: bool = False, verify: bool | str = True,
             mmap: bool = True) -> EmbeddingIndex:
        """Load a saved index, verifying format, checksums and the model.

        A folder left half-swapped by a save that was killed is restored first. A disk-backed folder
        (``embedkit.index/2``) gives a :class:`~embedkit.retrieval.ondisk.DiskIndex`, whose files are
        memory-mapped or queried on disk, not read.

        Args:
            model: the encoder to query with (object, path or name); ``None`` loads the one
                recorded in the manifest when first needed.
            force: query with a model whose fingerprint differs from the index's (also for the
                recorded model loaded later when ``model`` is None).
            verify: check every file's sha256 (reads the whole index once); for a disk-backed index
                files over 64 MiB are checked by size and a sample checksum unless ``verify="full"``.
            mmap: memory-map the rescoring vectors instead of reading them.

        Raises:
            IndexFormatError: missing, foreign, edited, truncated or corrupt index.
            ModelMismatchError: ``model`` is not the model the index was built with.
        """
        path = Path(path)
        recover_directory(path)
        manifest = read_manifest(path, verify=verify)
        if manifest["format"] != FORMAT:
            index = DiskIndex.from_manifest(path, manifest, force=force)
        else:
            index = cls._read_folder(path, manifest, force=force, mmap=mmap)
        if model is not None:
            index.use_model(model, force=force)
        return index

    @classmethod
    def _read_folder(cls, path: Path, manifest: dict, *, force: bool, mmap: bool) -> EmbeddingIndex:
        """The in-memory index of the ``embedkit.index/1`` folder ``path`` whose checked manifest is ``manifest``."""
        index = cls._from_manifest_fields(path, manifest, force=force)
        try:
            index.compression = CompressionPipeline.load(path, "quantizer")
            index._code_index = index.compression.index_from_bytes((path / "index.faiss").read_bytes(), index.backend)
            index._apply_search_params()
        except (RuntimeError, EmbedkitError, KeyError, ValueError, TypeError) as e:
            raise IndexFormatError(f"{path}: cannot read the index ({str(e).splitlines()[0][:200]}); rebuild it") from e
        index._docs = DocStore.load(path / "docs.sqlite")
        if index.keyword and not has_keyword(index._docs.conn):
            raise IndexFormatError(f"{path}: docs.sqlite has no keyword index, the manifest says it has one; "
                                   "rebuild the index")
        index._keys = np.asarray(index._docs.keys(), dtype=np.int64)
        if index.rescore:
            try:
                vecs = np.load(path / RESCORE_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
            except ValueError as e:
                raise IndexFormatError(f"{path}: {RESCORE_FILE} is unreadable ({e}); rebuild the index") from e
            want = index.rescore_dim
            if vecs.dtype != np.float16 or vecs.ndim != 2 or vecs.shape[1] not in (want, index.dim):
                raise IndexFormatError(f"{path}: {RESCORE_FILE} holds {vecs.dtype} {vecs.shape}, expected float16 "
                                       f"(n, {want}); rebuild the index")
            # indexes written before rescoring vectors were stored at the spec's dimension keep full vectors
            index._rescore_full_dim = vecs.shape[1] != want
            index._rescore_vecs = vecs
        counts = {"manifest": manifest["count"], **index._counts()}
        if len(set(counts.values())) != 1:
            raise IndexFormatError(f"{path}: inconsistent document counts {counts}; rebuild the index")
        return index
