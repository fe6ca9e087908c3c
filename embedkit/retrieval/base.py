"""The index contract (:class:`IndexBase`): what the in-memory and the disk-backed index share.

:class:`~embedkit.retrieval.index.EmbeddingIndex` (in memory) and
:class:`~embedkit.retrieval.ondisk.DiskIndex` (segments on disk) both subclass it; inheritance was
chosen over a storage component because the two differ in five storage methods and share everything
else (model checks, search effort, add validation, hits), so one base reads simplest; see
docs/architecture.md.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit.compression.base import check_matrix, l2_normalize
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.compression.spec import quantizer_from_spec
from embedkit.data.documents import MAX_LISTED_IDS, validate_documents
from embedkit.errors import EmbedkitError, IndexFormatError, IndexStateError, ModelMismatchError
from embedkit.models.resolve import (
    model_backend,
    model_description,
    model_fingerprint,
    model_load_options,
    model_weights_fingerprint,
)
from embedkit.retrieval.common import DEFAULT_EF_SEARCH, INDEX_TYPES, Hit, check_ids, default_nprobe, resolve_index_type
from embedkit.retrieval.hybrid import check_mode, ranked_keys
from embedkit.retrieval.locking import ReadWriteLock
from embedkit.retrieval.manifest import read_manifest
from embedkit.validation import check_positive_int

__all__ = ["INDEX_TYPES", "IndexBase", "resolve_index_type"]

logger = logging.getLogger(__name__)

class IndexBase:
    """The index contract both storage formats implement, and everything they share.

    Contract: ``build`` (in-memory), ``add``, ``remove``, ``search`` / ``search_ids`` /
    ``search_embeddings`` -> ``(scores, ...)``, ``save``, ``load`` (:meth:`EmbeddingIndex.load`
    dispatches on the manifest's format), ``use_model`` (attach a checked encoder), ``len``, ``in``,
    and the stats ``bytes_per_vector``, ``rescore_dim``, ``rescore_bytes_per_vector``, ``nprobe``,
    ``ef_search``.

    Shared here: argument checks, the model (loaded lazily, checked against the recorded
    fingerprint), search effort, validation and encoding before an add, query encoding, turning rows
    into ids and hits, the manifest's common fields. A storage format provides the methods below
    that raise :class:`NotImplementedError` and three attributes the shared code reads under the
    lock: ``_keys`` (row -> document key, indexable by an array of rows), ``_docs`` (``get``,
    ``ids_for_keys``, ``keys_of``, ``existing_ids``, ``next_key``) and ``compression``.
    Implementations: :class:`~embedkit.retrieval.index.EmbeddingIndex` (in memory, format
    ``embedkit.index/1``) and :class:`~embedkit.retrieval.ondisk.DiskIndex` (segments on disk,
    ``embedkit.index/2``).
    """

    def __init__(self, model=None, spec: str = "float", *, index_type: str | None = None, rescore: int | None = None,
                 nlist: int | None = None, hnsw_m: int = 32, nprobe: int | None = None, ef_search: int | None = None,
                 backend: str | None = None, keyword: bool = True):
        index_type = resolve_index_type(index_type, backend, stacklevel=4)
        #: whether the docstore keeps the keyword (BM25, SQLite FTS5) index of the texts
        self.keyword = bool(keyword)
        self.rescore = None if rescore is None else check_positive_int(rescore, "rescore (oversampling factor)")
        self.nlist = None if nlist is None else check_positive_int(nlist, "nlist")
        self.hnsw_m = check_positive_int(hnsw_m, "hnsw_m", minimum=2)
        self._nprobe = None if nprobe is None else check_positive_int(nprobe, "nprobe (IVF lists per query, --nprobe)")
        self._ef_search = None if ef_search is None else check_positive_int(ef_search, "ef_search (HNSW, --ef-search)")
        self.spec = spec
        #: the FAISS structure over the codes: ``"flat"``, ``"hnsw"`` or ``"ivf"``
        self.index_type = index_type
        self.compression: CompressionPipeline = quantizer_from_spec(spec)
        self._model = None
        self._force = False
        self._model_lock = threading.Lock()
        self._lock = ReadWriteLock()
        self.model_source: str | None = None
        self.model_options: dict = {}
        self.model_fingerprint: str | None = None
        #: fingerprint of the torch weights behind the encoder (equal for torch, onnx and onnx-int8 of one
        #: model; None for an index saved before it was recorded with a non-torch backend)
        self.model_weights: str | None = None
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self._set_model(model)
        elif model is not None:
            self.model_source = str(model)
        self.dim: int | None = None
        self._rescore_full_dim = False
        self._broken: str | None = None
        #: ids of blank documents skipped by ``add``/``build`` (at most 1,000 listed) and their count
        self.skipped_ids: list[str] = []
        self.skipped_count = 0
        self.build_seconds: float | None = None
        #: how the index tuner chose this configuration and what it measured (``index build --budget-bytes``)
        self.tuning: dict | None = None

    @property
    def backend(self) -> str:
        """Deprecated alias of :attr:`index_type` (the FAISS structure). The encoder runtime is
        :attr:`model_backend`."""
        return self.index_type

    @backend.setter
    def backend(self, value: str) -> None:
        self.index_type = value

    def __repr__(self) -> str:
        model = self.model_source if self.model_source is not None else "default (all-MiniLM-L6-v2)"
        return (f"EmbeddingIndex(count={len(self)}, dim={self.dim}, spec={self.compression.spec!r}, "
                f"index_type={self.index_type!r}, rescore={self.rescore}, model={model!r})")

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (``None`` for other backends until set); settable at any time."""
        if self._nprobe is not None or self.backend != "ivf":
            return self._nprobe
        nlist = self._ivf_nlist()
        return None if nlist is None else default_nprobe(nlist)

    @nprobe.setter
    def nprobe(self, value) -> None:
        self._nprobe = None if value is None else check_positive_int(value, "nprobe (IVF lists per query, --nprobe)")
        self._apply_search_params()

    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth (``None`` for other backends until set); settable at any time."""
        if self._ef_search is not None or self.backend != "hnsw":
            return self._ef_search
        return DEFAULT_EF_SEARCH

    @ef_search.setter
    def ef_search(self, value) -> None:
        self._ef_search = None if value is None else check_positive_int(value, "ef_search (HNSW, --ef-search)")
        self._apply_search_params()

    def _ivf_nlist(self) -> int | None:
        ivf = self._faiss_ivf()
        return None if ivf is None else int(ivf.nlist)

    # -- model ----------------------------------------------------------------------------------
    def _set_model(self, model) -> None:
        self._model = model
        self.model_fingerprint = model_fingerprint(model)
        self.model_weights = model_weights_fingerprint(model)
        self.model_source = model_description(model)
        self.model_options = model_load_options(model)

    @property
    def model_backend(self) -> str:
        """The runtime the index's documents were encoded with (``torch``, ``onnx``, ``onnx-int8``)."""
        return str((self.model_options or {}).get("backend", "torch"))

    def _same_weights(self, model) -> bool:
        """True when ``model`` is the index's model, on the index's backend or another one (the runtime is
        a speed choice: torch, onnx and onnx-int8 of the same weights search the same index)."""
        if model_fingerprint(model) == self.model_fingerprint:
            return True
        if self.model_weights is None or model_weights_fingerprint(model) != self.model_weights:
            return False
        if model_backend(model) != self.model_backend:
            logger.info("encoding with backend %s; the index's documents were encoded with %s (same weights)",
                        model_backend(model), self.model_backend)
        return True

    def _backend_hint(self, model) -> str | None:
        """What to pass when ``model`` may be the right weights on another backend than an older index records."""
        backend = model_backend(model)
        if self.model_weights is None and backend != self.model_backend:
            return (f"this index records only the fingerprint of its {self.model_backend} encoder (saved by an older "
                    f"embedkit), so the {backend} backend cannot be checked against it: query it with "
                    f"backend={self.model_backend!r} (--backend {self.model_backend}), or rebuild the index")
        return None

    @property
    def model(self):
        """The encoder (loaded on first use from the recorded source, and checked against the fingerprint)."""
        if self._model is None:
            with self._model_lock:
                if self._model is None:
                    from embedkit.models.loading import load_encoder

                    model = load_encoder(self.model_source, **(getattr(self, "model_options", None) or {}))
                    fp = model_fingerprint(model)
                    if self.model_fingerprint is None:
                        self.model_fingerprint = fp
                        self.model_weights = model_weights_fingerprint(model)
                    elif not self._same_weights(model):
                        msg = (f"the model at {self.model_source!r} (fingerprint {fp}) is not the one this index was "
                               f"built with ({self.model_fingerprint})")
                        if not self._force:
                            raise ModelMismatchError(f"{msg}; pass the original model, or force=True (--force) to query anyway")
                        logger.warning("%s; querying anyway (force)", msg)
                    self._model = model
        return self._model

    def use_model(self, model, force: bool = False) -> None:
        """Query (and add) with ``model`` from now on, after checking it is the one the index was built with.

        The way to give a loaded index its encoder: ``EmbeddingIndex.load(path, model=...)`` calls it,
        and so does the CLI once the index's own checks have passed, so an index is read once.

        The same weights on another runtime are accepted (an index built with ``backend="torch"`` can be
        searched with ``"onnx-int8"`` and the other way round): the check compares the fingerprint of
        the torch weights behind the encoder.

        Args:
            model: an encoder object, or a path or name to load with :func:`~embedkit.models.load_encoder`.
            force: use it even if its weights differ from the ones the index records (a warning is
                logged instead).

        Raises:
            EmbedkitError: ``model`` is None.
            ModelMismatchError: the model's fingerprint is not the index's (without ``force``).
        """
        from embedkit.models.loading import load_encoder

        if model is None:
            raise EmbedkitError("use_model: no model given; pass an encoder, a model folder or a model name")
        if isinstance(model, (str, os.PathLike)):
            model = load_encoder(model)
        fp = model_fingerprint(model)
        if self.model_fingerprint is None:
            # built from precomputed embeddings without a model object: nothing to compare with
            logger.warning("this index does not record the fingerprint of the model that encoded its documents "
                           "(built from precomputed embeddings); querying with %s (fingerprint %s)",
                           model_description(model), fp)
            self.model_fingerprint = fp
            self.model_weights = model_weights_fingerprint(model)
            self.model_source = model_description(model)
        elif not self._same_weights(model):
            msg = (f"this index was built with model {self.model_source!r} (fingerprint {self.model_fingerprint}, "
                   f"backend {self.model_backend}); the given model has fingerprint {fp} (backend {model_backend(model)})")
            hint = self._backend_hint(model)
            if not force:
                raise ModelMismatchError(f"{msg}. " + (hint[0].upper() + hint[1:] if hint else
                                                       "Use the original model, or force=True (--force) to query anyway"))
            logger.warning("%s; querying anyway (force)", msg)
        with self._model_lock:
            self._model = model

    # -- documents --------------------------------------------------------------------------------
    def __contains__(self, doc_id) -> bool:
        return bool(self.present_ids([doc_id]))

    def present_ids(self, ids: Sequence[str]) -> list[str]:
        """The ones among ``ids`` that are in the index (searchable)."""
        ids = check_ids(ids)
        with self._lock.read():
            return self._docs.existing_ids(ids)

    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict | None] | None = None,
            *, embeddings: np.ndarray | None = None, batch_size: int = 64, show_progress: bool = False, cache=None,
            on_empty: str = "skip") -> None:
        """Add documents (encoded with the index's model unless ``embeddings`` are given).

        All or nothing: every document is validated (texts, ids, JSON-encodable metadata, embeddings)
        before the index is touched, and a failure in a later step rolls back what was done. The first
        call fits the compression on these documents' embeddings.

        Args:
            on_empty: ``"skip"`` (default) leaves out blank documents (empty, whitespace, zero-width or
                control characters only) with a warning naming them; they are recorded in
                :attr:`skipped_ids` / :attr:`skipped_count` and in the saved manifest.
                ``"error"`` refuses the whole batch instead.

        Raises:
            EmbedkitError: empty corpus, blank document (``on_empty="error"``), duplicate or existing
                id, metadata that is not a JSON-encodable dict, embeddings of the wrong shape or with
                NaN/inf, ``nlist`` above the number of documents.
        """
        docs = validate_documents(texts, ids, metadata, on_empty=on_empty, id_start=self._docs.next_key())
        n_input = len(docs) + len(docs.skipped_ids)
        if embeddings is None:
            from embedkit.cache import encode_cached

            X = encode_cached(self.model, docs.texts, batch_size=batch_size, show_progress=show_progress, cache=cache,
                              desc="encoding corpus")
        else:
            X = check_matrix(embeddings, self.dim, "document embeddings")
            if len(X) != n_input:
                raise EmbedkitError(f"got {len(X)} embeddings for {n_input} documents")
            if docs.skipped_ids:
                X = X[np.asarray(docs.positions, dtype=np.int64)]
        X = l2_normalize(check_matrix(X, self.dim, "document embeddings"))
        with self._lock.write():
            self._add_locked(docs, X)

    def _record_skipped(self, skipped: list[str], added: list[str]) -> None:
        if added and self.skipped_ids:
            back = set(added) & set(self.skipped_ids)
            if back:
                self.skipped_ids = [i for i in self.skipped_ids if i not in back]
                self.skipped_count -= len(back)
        if skipped:
            self.skipped_count += len(skipped)
            room = MAX_LISTED_IDS - len(self.skipped_ids)
            self.skipped_ids += skipped[: max(room, 0)]

    def _check_not_broken(self) -> None:
        if self._broken:
            raise IndexStateError(f"this index is inconsistent ({self._broken}); load it again from disk")

    # -- search ---------------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise EmbedkitError(f"query {i} is empty; give some text to search for")
        return np.asarray(self.model.encode(list(queries), convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)

    def search_embeddings(self, Q, k: int = 10, *, rescore: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search with query embeddings. Returns ``(scores, rows)``, each ``(nq, min(k, len))``; -1 pads.

        Rows are positions in the index at the time of the search (they shift after ``remove``).

        Raises:
            EmbedkitError: wrong dimension, NaN/inf, k not a whole number >= 1, empty index.
        """
        k = check_positive_int(k, "k")
        with self._lock.read():
            return self._search_rows(Q, k, rescore)

    def search_ids(self, Q, k: int = 10, *, rescore: bool | None = None, mode: str = "dense", where=None,
                   texts: Sequence[str] | None = None, fusion: str = "rrf", alpha: float = 0.5,
                   depth: int | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Like :meth:`search_embeddings` but returns ``(scores, ids)``: document ids, no text lookup.

        ``mode``, ``where``, ``fusion``, ``alpha``, ``depth``: as for :meth:`search`; ``keyword`` and
        ``hybrid`` also need the query ``texts`` (``Q`` may then be None for ``keyword``). Scores are
        padded with NaN where a query has fewer than ``k`` hits.
        """
        k = check_positive_int(k, "k")
        with self._lock.read():
            ranked = ranked_keys(self, None if texts is None else list(texts), Q, k, mode=mode, where=where,
                                 rescore=rescore, fusion=fusion, alpha=alpha, depth=depth)
            key_to_id = self._docs.ids_for_keys(sorted({key for hits in ranked for key, _ in hits}))
        scores = np.full((len(ranked), max((len(h) for h in ranked), default=0)), np.nan, dtype=np.float32)
        for i, hits in enumerate(ranked):
            scores[i, :len(hits)] = [s for _, s in hits]
        return scores, [[key_to_id[key] for key, _ in hits] for hits in ranked]

    def search(self, query, k: int = 10, *, rescore: bool | None = None, mode: str = "dense", where=None,
               fusion: str = "rrf", alpha: float = 0.5, depth: int | None = None, texts: Sequence[str] | None = None):
        """Search with a query string (returns ``list[Hit]``), a list of strings or an embedding
        matrix (returns one ``list[Hit]`` per query).

        Args:
            mode: ``"dense"`` (the vectors), ``"keyword"`` (BM25 over the texts; needs the keyword
                index) or ``"hybrid"`` (both, fused; see :mod:`embedkit.retrieval.hybrid`).
            where: a metadata filter, e.g. ``{"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}``
                (see :mod:`embedkit.retrieval.filters`): only matching documents are returned, the
                best ``k`` of them.
            fusion: ``"rrf"`` (reciprocal-rank fusion, default) or ``"weighted"`` (min-max scores,
                ``alpha * dense + (1 - alpha) * keyword``) for hybrid search.
            depth: candidates per side for hybrid search (default 100, at least k).
            texts: the query texts when ``query`` is an embedding matrix (for keyword and hybrid search).
        """
        k = check_positive_int(k, "k")
        single = isinstance(query, str)
        texts = None if texts is None else list(texts)
        if single or (isinstance(query, (list, tuple)) and query and isinstance(query[0], str)):
            texts = [query] if single else list(query)
            check_mode(mode, fusion, alpha)
            if mode == "keyword":
                for i, q in enumerate(texts):
                    if not isinstance(q, str) or not q.strip():
                        raise EmbedkitError(f"query {i} is empty; give some text to search for")
            Q = None if mode == "keyword" else self.encode_queries(texts)
        elif isinstance(query, (list, tuple)) and not query:
            raise EmbedkitError("no queries given")
        else:
            Q = query
        with self._lock.read():
            ranked = ranked_keys(self, texts, Q, k, mode=mode, where=where, rescore=rescore, fusion=fusion,
                                 alpha=alpha, depth=depth)
            docs = self._docs.get(sorted({key for hits in ranked for key, _ in hits}))
        results = [[Hit(docs[key][0], float(s), docs[key][1], docs[key][2])
                    for key, s in hits] for hits in ranked]
        return results[0] if single else results

    # -- stats ----------------------------------------------------------------------------------
    @property
    def bytes_per_vector(self) -> int:
        """Bytes per document in the FAISS codes (without rescoring vectors)."""
        return int(self.compression.code_size)

    @property
    def rescore_dim(self) -> int | None:
        """Dimension of the float16 rescoring vectors: the spec's output dimension (``mrl:128`` -> 128)."""
        if self.compression is None or self.dim is None:
            return None
        probe = np.zeros((1, self.dim), dtype=np.float32)
        probe[0, 0] = 1.0
        return int(np.asarray(self.compression.transform(probe)).shape[1])

    @property
    def rescore_bytes_per_vector(self) -> int:
        """Bytes per document of the float16 rescoring vectors kept on disk (0 without rescoring)."""
        if not self.rescore:
            return 0
        return 2 * int((self.dim if self._rescore_full_dim else self.rescore_dim) or 0)

    # -- manifest -------------------------------------------------------------------------------
    @staticmethod
    def read_manifest(path: str | os.PathLike, *, verify: bool | str = True) -> dict:
        """Read and check ``manifest.json`` (see :func:`embedkit.retrieval.manifest.read_manifest`)."""
        return read_manifest(path, verify=verify)

    def _manifest_model(self) -> dict:
        """The manifest's ``model`` entry: where the model came from, its fingerprint and load options."""
        out = {"source": self.model_source, "fingerprint": self.model_fingerprint}
        if self.model_weights is not None and self.model_weights != self.model_fingerprint:
            out["weights"] = self.model_weights  # the torch weights behind an onnx / onnx-int8 encoder
        if self.model_options:
            out["options"] = self.model_options
        return out

    @classmethod
    def _from_manifest_fields(cls, path: Path, manifest: dict, *, force: bool = False):
        """An empty index of ``cls`` configured from a checked manifest (shared by both index formats)."""
        try:
            index = cls(None, manifest["spec"], index_type=manifest["backend"], rescore=manifest.get("rescore"),
                        nlist=manifest.get("nlist"), hnsw_m=manifest.get("hnsw_m", 32),
                        nprobe=manifest.get("nprobe"), ef_search=manifest.get("ef_search"),
                        keyword=manifest.get("keyword", False))
        except EmbedkitError as e:
            raise IndexFormatError(f"{path}: the manifest describes an index this embedkit cannot build ({e})") from e
        index._force = bool(force)
        index.model_source = manifest["model"]["source"]
        index.model_options = dict(manifest["model"].get("options") or {})
        index.model_fingerprint = manifest["model"]["fingerprint"]
        weights = manifest["model"].get("weights")
        # a torch index's weights are its fingerprint; an onnx index saved before "weights" was recorded: unknown
        index.model_weights = weights if isinstance(weights, str) else (
            index.model_fingerprint if index.model_backend == "torch" else None)
        index.dim = manifest["dim"]
        index.build_seconds = manifest.get("build_seconds")
        index.tuning = manifest.get("tuning") if isinstance(manifest.get("tuning"), dict) else None
        skipped = manifest.get("skipped_empty") or {"count": 0, "ids": []}
        index.skipped_count, index.skipped_ids = skipped["count"], list(skipped["ids"])
        return index


    # -- what each storage format implements ------------------------------------------------------
    def __len__(self) -> int:
        """Documents in the index (searchable, not removed)."""
        raise NotImplementedError

    def _faiss_ivf(self):
        """The FAISS IVF index searches go through, or None (not IVF, or nothing indexed yet)."""
        raise NotImplementedError

    def _apply_search_params(self) -> None:
        """Make the current ``nprobe`` / ``ef_search`` take effect."""
        raise NotImplementedError

    def _add_locked(self, docs, X: np.ndarray) -> None:
        """Add validated documents and their normalised embeddings; the caller holds the write lock."""
        raise NotImplementedError

    def remove(self, ids: Sequence[str]) -> None:
        """Remove documents by id, all or nothing; once it returns no search returns them."""
        raise NotImplementedError

    def _counts(self) -> dict[str, int]:
        """Document counts of every part of the storage (equal when the index is consistent)."""
        raise NotImplementedError

    def check_consistency(self) -> None:
        """Raise :class:`~embedkit.errors.IndexStateError` unless every part of the storage agrees."""
        raise NotImplementedError

    def _search_rows(self, Q, k: int, rescore: bool | None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)`` of query embeddings; the caller holds the read lock."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike, *, layout: str | None = None) -> Path:
        """Write the index folder (atomically, replacing only an embedkit index)."""
        raise NotImplementedError
