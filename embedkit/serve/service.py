"""The search service behind the HTTP app: one index, its write log, the query batcher, snapshots.

Threads and locks:

* searches go through :class:`~embedkit.serve.batching.QueryBatcher` (one worker thread); the
  index's own readers-writer lock makes each search see the index before or after a write;
* writes are serialised by the service's write mutex: validate and encode (outside the mutex),
  then, holding it, append the record to the write log (fsync), apply it to the index, and only
  then acknowledge;
* a snapshot holds the write mutex while the index saves itself (atomically) and the log is
  emptied: writes wait, searches go on (no writer is queued on the index's lock meanwhile);
* model calls (query batches and document encoding) are serialised by a model lock: fast
  tokenizers must not be used by two threads at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedkit._io import recover_directory
from embedkit.errors import EmbedkitError, ServeError, WriteLogError
from embedkit.models.resolve import model_backend
from embedkit.serve.batching import QueryBatcher
from embedkit.serve.config import ServeConfig
from embedkit.serve.inputs import check_documents
from embedkit.serve.metrics import Metrics
from embedkit.serve.writelog import LogRecord, WriteLog, log_path_for

__all__ = ["SearchService", "Document", "WriteUnavailable"]

logger = logging.getLogger(__name__)


@dataclass
class Document:
    id: str
    text: str
    metadata: dict[str, Any] | None


class WriteUnavailable(RuntimeError):
    """Writes cannot be made durable right now (the write log failed); searches still work."""


def document_by_id(index, doc_id: str) -> Document | None:
    """One stored document by id, or None.

    ``EmbeddingIndex`` has no public lookup by id yet; until it has one (``get_documents``), this
    reads its docstore (which serialises its own access) directly.
    """
    getter = getattr(index, "get_documents", None)
    if getter is not None:  # pragma: no cover - once the index offers it
        found = getter([doc_id])
        hit = found.get(doc_id) if isinstance(found, dict) else (found[0] if found else None)
        return None if hit is None else Document(hit.id, hit.text, hit.metadata)
    docs = index._docs
    keys = docs.keys_of([doc_id])
    if doc_id not in keys:
        return None
    row = docs.get([keys[doc_id]]).get(keys[doc_id])
    if row is None:
        return None
    return Document(row[0], row[1], row[2])


class SearchService:
    """An :class:`~embedkit.retrieval.index.EmbeddingIndex` served durably.

    Opening it locks the write log beside the index (``INDEX.wal``) if there is one, loads the index
    and its model, creates the log if there was none (so a refused start leaves nothing behind),
    replays the log over the index (every record is read and checked before any is applied; if there
    was anything to replay, a snapshot follows), then starts the query batcher and the background
    snapshot thread.

    ``index_path`` must be the index folder itself, not a symbolic link to it: a snapshot replaces the
    folder by renaming, which would replace the link with a folder and leave its target stale.

    Args:
        index_path: the index folder.
        config: limits, batching and snapshot settings.
        model: the encoder (object, path or name); ``None`` loads the one the index records.
        force: query with a model whose fingerprint differs from the index's.

    Raises:
        IndexFormatError: no index at ``index_path``, or a corrupt one.
        ServeError: ``index_path`` is a symbolic link.
        WriteLogError: another server holds the log, the log is a link or damaged, or one of its
            records does not fit the index.
    """

    def __init__(self, index_path: str | os.PathLike, config: ServeConfig | None = None, *, model=None,
                 force: bool = False):
        from embedkit.retrieval.index import EmbeddingIndex

        self.path = Path(index_path)
        self.config = config or ServeConfig()
        self.metrics = Metrics()
        if self.path.is_symlink():
            raise ServeError(f"{self.path} is a symbolic link (to {os.readlink(self.path)}); serve the index folder "
                             f"itself ({self.path.resolve()}): snapshots replace the folder by renaming, which would "
                             "replace the link")
        recover_directory(self.path)
        EmbeddingIndex.read_manifest(self.path, verify=False)  # a missing or foreign folder fails before the log is opened
        log_path = log_path_for(self.path)
        # an existing log is locked now (a second server fails before loading anything); a missing one is
        # created only once the index has loaded, so that a refused start leaves no file behind
        self.log = WriteLog(log_path, create=False) if os.path.lexists(log_path) else None
        self._write_mutex = threading.Lock()
        self._model_lock = threading.Lock()
        self._broken: str | None = None
        self.last_snapshot: dict[str, Any] = {"at": None, "seconds": None, "error": None}
        self._last_snapshot_t = time.monotonic()
        try:
            t0 = time.perf_counter()
            self.index = EmbeddingIndex.load(self.path, model=model, force=force)
            self.index.model  # noqa: B018 - load the model now, not on the first request
            self.load_seconds = time.perf_counter() - t0
            if self.log is None:
                self.log = WriteLog(log_path)
            replayed = self._replay()
            self.replayed = replayed
            if replayed:
                logger.info("replayed %d write(s) from %s over the last snapshot", replayed, self.log.path)
                self.snapshot()
        except BaseException:
            if self.log is not None:
                self.log.close()
            raise
        cfg = self.config
        self.batcher = QueryBatcher(self._encode_queries, self._search_matrix, window_s=cfg.batch_window_ms / 1000,
                                    max_batch=cfg.max_batch, max_pending=cfg.max_pending,
                                    on_batch=self.metrics.observe_batch)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._snapshotter = threading.Thread(target=self._snapshot_loop, name="embedkit-snapshots", daemon=True)
        self._snapshotter.start()
        self._closed = False

    # -- model ----------------------------------------------------------------------------------
    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        with self._model_lock:
            return self.index.encode_queries(texts)

    def _encode_documents(self, texts: list[str]) -> np.ndarray:
        from embedkit.cache import encode_cached

        with self._model_lock:
            return encode_cached(self.index.model, texts, cache=False, show_progress=False)

    # -- search ---------------------------------------------------------------------------------
    def _search_matrix(self, Q: np.ndarray, k: int, rescore: bool | None):
        if len(self.index) == 0:
            return [[] for _ in range(len(Q))]
        try:
            return self.index.search(Q, k=k, rescore=rescore)
        except EmbedkitError:
            if len(self.index) == 0:  # emptied by a write since the check above
                return [[] for _ in range(len(Q))]
            raise

    def search_with(self, queries: Sequence[str], k: int, rescore: bool | None = None, *, mode: str = "dense",
                    where=None, fusion: str = "rrf") -> list[list]:
        """Keyword or hybrid search, or a metadata filter (``where``), outside the batcher: the queries are
        encoded here (dense and hybrid) and searched at once. Blocking; call it from a worker thread.

        Raises:
            EmbedkitError: an unknown mode, a bad filter, or keyword search on an index without a keyword index.
        """
        from embedkit.retrieval.hybrid import check_mode

        texts = list(queries)
        check_mode(mode, fusion)
        if len(self.index) == 0:
            return [[] for _ in texts]
        Q = None if mode == "keyword" else self._encode_queries(texts)
        try:
            return self.index.search(texts if Q is None else Q, k=k, rescore=rescore, mode=mode, where=where,
                                     fusion=fusion, texts=texts)
        except EmbedkitError:
            if len(self.index) == 0:  # emptied by a write meanwhile
                return [[] for _ in texts]
            raise

    def submit_search(self, queries: Sequence[str], k: int, rescore: bool | None = None) -> list[concurrent.futures.Future]:
        """Queue queries for the batcher; each future resolves to a list of :class:`~embedkit.retrieval.index.Hit`."""
        return self.batcher.submit_many(list(queries), k, rescore)

    def search(self, queries: Sequence[str], k: int = 10, rescore: bool | None = None, timeout: float | None = None):
        """Blocking search through the batcher (for callers outside the event loop)."""
        futures = self.submit_search(queries, k, rescore)
        return [f.result(timeout=timeout or self.config.search_timeout_s) for f in futures]

    # -- documents ------------------------------------------------------------------------------
    def get_document(self, doc_id: str) -> Document | None:
        return document_by_id(self.index, doc_id)

    def _check_writable(self) -> None:
        if self._broken is None and self.log.failed:
            self._broken = f"the write log failed: {self.log.failed}"
        if self._broken:
            raise WriteUnavailable(f"writes are disabled: {self._broken}; restart the server")

    def _undo_log(self, offset: int) -> None:
        try:
            self.log.truncate_to(offset)
        except OSError as e:  # the log holds a write the index refused: stop accepting writes
            self._broken = f"the write log could not be rolled back ({e})"
            logger.error("%s", self._broken)

    def add_documents(self, ids: list[str], texts: list[str], metadata: list[dict | None]) -> list[str]:
        """Add documents durably. Returns the ids already in the index (then nothing was added).

        Raises:
            EmbedkitError: invalid documents (see :func:`embedkit.data.documents.validate_documents` and
                :func:`embedkit.serve.inputs.check_documents`: no NaN/inf or lone surrogates, no control
                characters in ids).
            WriteUnavailable: the write log failed; nothing was acknowledged.
        """
        from embedkit.data.documents import validate_documents

        self._check_writable()
        # the service's own check first: its messages name the request field (documents[1].text)
        check_documents(list(ids), list(texts), list(metadata))
        docs = validate_documents(texts, ids, metadata, on_empty="error")
        present = self.index.present_ids(docs.ids)
        if present:
            return present
        X = self._encode_documents(docs.texts)
        with self._write_mutex:
            self._check_writable()
            present = self.index.present_ids(docs.ids)
            if present:
                return present
            record = LogRecord("add", docs.ids, docs.texts, docs.metadata, X)
            try:
                offset = self.log.append(record)
            except OSError as e:
                raise WriteUnavailable(f"the write log could not be written ({e})") from e
            try:
                self.index.add(docs.texts, docs.ids, docs.metadata, embeddings=X, on_empty="error")
            except BaseException:
                self._undo_log(offset)
                raise
        self.metrics.add_counts(added=len(docs.ids))
        self._maybe_wake()
        return []

    def remove_document(self, doc_id: str) -> bool:
        """Remove one document durably; False if it is not in the index.

        Raises:
            WriteUnavailable: the write log failed; nothing was acknowledged.
        """
        self._check_writable()
        with self._write_mutex:
            self._check_writable()
            if not self.index.present_ids([doc_id]):
                return False
            try:
                offset = self.log.append(LogRecord("remove", [doc_id]))
            except OSError as e:
                raise WriteUnavailable(f"the write log could not be written ({e})") from e
            try:
                self.index.remove([doc_id])
            except BaseException:
                self._undo_log(offset)
                raise
        self.metrics.add_counts(removed=1)
        self._maybe_wake()
        return True

    # -- durability -----------------------------------------------------------------------------
    def _replay(self) -> int:
        """Apply the log's records over the loaded snapshot (idempotently); returns how many.

        Every record is read and checked against the index first (documents, vector shapes and
        dimension), so a record that does not fit refuses the start before anything is applied.
        """
        index = self.index
        records = self.log.read_all()
        dim = index.dim
        for rec in records:
            dim = self._check_record(rec, dim)
        pending: dict[str, tuple[str, dict | None, np.ndarray]] = {}

        def flush():
            if not pending:
                return
            ids = list(pending)
            present = index.present_ids(ids)
            if present:
                index.remove(present)
            index.add([pending[i][0] for i in ids], ids, [pending[i][1] for i in ids],
                      embeddings=np.stack([pending[i][2] for i in ids]), on_empty="error")
            pending.clear()

        rec = None
        try:
            for rec in records:
                if rec.op == "add":
                    if any(i in pending for i in rec.ids):
                        flush()
                    for i, t, m, v in zip(rec.ids, rec.texts, rec.metadata, rec.vectors):
                        pending[i] = (t, m, v)
                else:
                    flush()
                    present = index.present_ids(rec.ids)
                    if present:
                        index.remove(present)
            flush()
        except EmbedkitError as e:
            raise WriteLogError(f"{self.log.path}:{rec.line}: the records up to this line cannot be applied to the "
                                f"index at {self.path} ({e}); was the index rebuilt under a live log? Move the log "
                                "aside to serve the index as it is") from e
        return len(records)

    def _check_record(self, rec: LogRecord, dim: int | None) -> int | None:
        """Refuse (naming the line) a record that cannot be applied; returns the vectors' dimension."""
        from embedkit.data.documents import validate_documents

        try:
            if not rec.ids or not all(isinstance(i, str) and i.strip() for i in rec.ids):
                raise EmbedkitError("its ids are missing or empty")
            if rec.op == "add":
                validate_documents(rec.texts, rec.ids, rec.metadata, on_empty="error")
                check_documents(rec.ids, rec.texts, rec.metadata)
                X = rec.vectors
                if X.ndim != 2 or len(X) != len(rec.ids):
                    raise EmbedkitError(f"{len(X)} vectors for {len(rec.ids)} documents")
                if dim is not None and X.shape[1] != dim:
                    raise EmbedkitError(f"its vectors have dimension {X.shape[1]}, the index's have {dim}")
                if not np.isfinite(X).all():
                    raise EmbedkitError("its vectors hold NaN or infinite values")
                return int(X.shape[1])
        except EmbedkitError as e:
            article = "an" if rec.op == "add" else "a"
            raise WriteLogError(f"{self.log.path}:{rec.line}: {article} {rec.op} record that cannot be applied to the index "
                                f"at {self.path} ({e}); nothing was applied. Was the index rebuilt under a live log? "
                                "Move the log aside to serve the index as it is (losing the writes recorded in "
                                "it)") from None
        return dim

    def snapshot(self) -> bool:
        """Save the index atomically and empty the write log; False if there was nothing to save."""
        with self._write_mutex:
            if self.log.records == 0:
                return False
            t0 = time.perf_counter()
            try:
                self.index.save(self.path)
                self.log.reset()
            except Exception as e:
                self.last_snapshot["error"] = f"{type(e).__name__}: {e}"
                raise
            self.last_snapshot = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                  "seconds": time.perf_counter() - t0, "error": None}
            self._last_snapshot_t = time.monotonic()
        self.metrics.add_counts(snapshots=1)
        logger.info("snapshot of %d documents written to %s in %.2f s", len(self.index), self.path,
                    self.last_snapshot["seconds"])
        return True

    def _maybe_wake(self) -> None:
        if self.log.records >= self.config.snapshot_records:
            self._wake.set()

    def _snapshot_loop(self) -> None:
        interval = self.config.snapshot_interval
        poll = min(1.0, interval / 2)
        while not self._stop.is_set():
            self._wake.wait(poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            due = self.log.records and (self.log.records >= self.config.snapshot_records
                                        or time.monotonic() - self._last_snapshot_t >= interval)
            if due:
                try:
                    self.snapshot()
                except Exception:
                    logger.exception("background snapshot of %s failed; writes stay safe in %s", self.path,
                                     self.log.path)
                    self._last_snapshot_t = time.monotonic()  # retry after another interval, not in a tight loop

    # -- stats and shutdown -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        idx = self.index
        return {
            "documents": len(idx),
            "spec": idx.compression.spec,
            "index_type": idx.index_type,
            "backend": model_backend(idx.model),
            "rescore": idx.rescore,
            "dim": idx.dim,
            "bytes_per_vector": idx.bytes_per_vector,
            "model": {"source": idx.model_source, "fingerprint": idx.model_fingerprint},
            "uptime_seconds": self.metrics.uptime(),
            "queries_served": self.metrics.queries,
            "search_latency": self.metrics.search_percentiles(),
            "pending_queries": self.batcher.pending(),
            "documents_added": self.metrics.documents_added,
            "documents_removed": self.metrics.documents_removed,
            "write_log": {"records": self.log.records, "bytes": self.log.size},
            "snapshots": {"count": self.metrics.snapshots, **self.last_snapshot},
            "writes_enabled": not self.config.read_only and not self._broken,
            "batching": {"window_ms": self.config.batch_window_ms, "max_batch": self.config.max_batch},
        }

    def close(self) -> None:
        """Stop the batcher and the snapshot thread, take a last snapshot, release the log."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._snapshotter.join(timeout=60)
        self.batcher.close()
        try:
            self.snapshot()
        except Exception:
            logger.exception("the snapshot at shutdown failed; the writes are safe in %s and are replayed on the "
                             "next start", self.log.path)
        self.log.close()

    def __enter__(self) -> SearchService:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
