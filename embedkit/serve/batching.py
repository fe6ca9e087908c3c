"""Dynamic query batching: searches that arrive within a few milliseconds share one model call.

On a CPU server the encoder dominates a search; encoding 16 queries at once costs little more than
encoding one. One worker thread takes the first waiting query, collects the others that arrive
within ``window_s`` (at most ``max_batch``), encodes them together, searches each group of equal
``(k, rescore)`` with one index call, and resolves every caller's future. While it works, new
queries queue up, so batches grow with the load by themselves.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["QueryBatcher", "Overloaded", "BatcherStopped"]

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """More queries are waiting than the server accepts (``max_pending``)."""


class BatcherStopped(Exception):
    """The server is shutting down."""


@dataclass
class _Item:
    text: str
    k: int
    rescore: bool | None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)


class QueryBatcher:
    """Collect queries into batches for one encoder call each.

    Args:
        encode: ``list[str] -> (n, dim) float32`` (one model call).
        search: ``(Q, k, rescore) -> list[list[hit]]`` (one index call for the rows of ``Q``).
        window_s: how long the first query of a batch waits for company.
        max_batch: most queries per model call.
        max_pending: most queries waiting; :meth:`submit` raises :class:`Overloaded` beyond it.
        on_batch: called with each batch's size (metrics).
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], search: Callable, *, window_s: float = 0.002,
                 max_batch: int = 64, max_pending: int = 2048, on_batch: Callable[[int], None] | None = None):
        self._encode = encode
        self._search = search
        self.window_s = float(window_s)
        self.max_batch = int(max_batch)
        self.max_pending = int(max_pending)
        self._on_batch = on_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embedkit-query-batcher", daemon=True)
        self._thread.start()

    def submit(self, text: str, k: int, rescore: bool | None = None) -> concurrent.futures.Future:
        """Queue one query; the future resolves to its list of hits (or the search's exception)."""
        if self._stopped.is_set():
            raise BatcherStopped("the server is shutting down")
        if self._queue.qsize() >= self.max_pending:
            raise Overloaded(f"{self._queue.qsize()} queries are already waiting")
        item = _Item(text, k, rescore)
        self._queue.put(item)
        return item.future

    def submit_many(self, texts: Sequence[str], k: int, rescore: bool | None = None) -> list[concurrent.futures.Future]:
        if self._queue.qsize() + len(texts) > self.max_pending:
            raise Overloaded(f"{self._queue.qsize()} queries are already waiting")
        return [self.submit(t, k, rescore) for t in texts]

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking queries, answer the waiting ones with :class:`BatcherStopped`, end the thread."""
        self._stopped.set()
        self._queue.put(None)
        self._thread.join(timeout)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item.future.done():
                item.future.set_exception(BatcherStopped("the server is shutting down"))

    # -- worker ---------------------------------------------------------------------------------
    def _collect(self, first: _Item) -> list[_Item]:
        batch = [first]
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()  # already waiting: take it without delay
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                self._queue.put(None)  # let the loop see the stop marker
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None or self._stopped.is_set():
                if first is not None and not first.future.done():
                    first.future.set_exception(BatcherStopped("the server is shutting down"))
                return
            batch = [it for it in self._collect(first) if it.future.set_running_or_notify_cancel()]
            if batch:
                self._process(batch)

    def _process(self, batch: list[_Item]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        unique: dict[str, int] = {}
        for it in batch:
            unique.setdefault(it.text, len(unique))
        try:
            Q = self._encode(list(unique))
        except BaseException as e:  # every caller gets the error; the worker lives on
            for it in batch:
                it.future.set_exception(e)
            return
        groups: dict[tuple[int, bool | None], list[_Item]] = {}
        for it in batch:
            groups.setdefault((it.k, it.rescore), []).append(it)
        for (k, rescore), items in groups.items():
            try:
                results = self._search(Q[[unique[it.text] for it in items]], k, rescore)
            except BaseException as e:
                for it in items:
                    it.future.set_exception(e)
                continue
            for it, hits in zip(items, results):
                it.future.set_result(hits)
