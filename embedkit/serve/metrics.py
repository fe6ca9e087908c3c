"""Request counters, latency histograms and percentiles; Prometheus text exposition (no dependency)."""

from __future__ import annotations

import bisect
import collections
import threading
import time

import numpy as np

__all__ = ["Metrics", "LATENCY_BUCKETS", "BATCH_BUCKETS"]

#: seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, v)] += 1
        self.sum += v
        self.count += 1


def _label(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters for the server; :meth:`prometheus` renders them as Prometheus text.

    ``window`` recent search latencies are kept for the percentiles in ``/api/stats``.
    """

    def __init__(self, window: int = 10_000):
        self.started = time.time()
        self._lock = threading.Lock()
        self.requests: collections.Counter = collections.Counter()  # (method, route, status) -> n
        self.latency: dict[tuple[str, str], _Histogram] = {}
        self.batch_sizes = _Histogram(BATCH_BUCKETS)
        self.search_latencies: collections.deque = collections.deque(maxlen=window)
        self.queries = 0
        self.documents_added = 0
        self.documents_removed = 0
        self.snapshots = 0
        self.errors_5xx = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, int(status))] += 1
            h = self.latency.get((method, route))
            if h is None:
                h = self.latency[(method, route)] = _Histogram(LATENCY_BUCKETS)
            h.observe(seconds)
            if status >= 500:
                self.errors_5xx += 1

    def observe_search(self, n_queries: int, seconds: float) -> None:
        with self._lock:
            self.queries += n_queries
            self.search_latencies.append(seconds)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.observe(size)

    def add_counts(self, *, added: int = 0, removed: int = 0, snapshots: int = 0) -> None:
        with self._lock:
            self.documents_added += added
            self.documents_removed += removed
            self.snapshots += snapshots

    def uptime(self) -> float:
        return time.time() - self.started

    def search_percentiles(self) -> dict[str, float | int | None]:
        with self._lock:
            lat = np.asarray(self.search_latencies, dtype=np.float64)
            batches = self.batch_sizes.count
            mean_batch = self.batch_sizes.sum / batches if batches else None
        out: dict[str, float | int | None] = {"window": int(lat.size), "mean_batch_size": mean_batch,
                                               "batches": batches}
        for p in (50, 95, 99):
            out[f"p{p}_ms"] = float(np.percentile(lat, p) * 1000) if lat.size else None
        return out

    def prometheus(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The metrics in Prometheus text format 0.0.4; ``gauges``: name -> (help, value)."""
        lines = []
        with self._lock:
            lines += ["# HELP embedkit_http_requests_total HTTP requests by method, route and status.",
                      "# TYPE embedkit_http_requests_total counter"]
            for (m, r, s), n in sorted(self.requests.items()):
                lines.append(f'embedkit_http_requests_total{{method="{_label(m)}",route="{_label(r)}",status="{s}"}} {n}')
            lines += ["# HELP embedkit_http_request_duration_seconds Request latency by method and route.",
                      "# TYPE embedkit_http_request_duration_seconds histogram"]
            for (m, r), h in sorted(self.latency.items()):
                base = f'method="{_label(m)}",route="{_label(r)}"'
                lines += self._hist("embedkit_http_request_duration_seconds", base, h)
            lines += ["# HELP embedkit_search_batch_size Queries encoded together in one model call.",
                      "# TYPE embedkit_search_batch_size histogram"]
            lines += self._hist("embedkit_search_batch_size", "", self.batch_sizes)
            counters = {
                "embedkit_queries_total": ("Queries answered.", self.queries),
                "embedkit_documents_added_total": ("Documents added (acknowledged).", self.documents_added),
                "embedkit_documents_removed_total": ("Documents removed (acknowledged).", self.documents_removed),
                "embedkit_snapshots_total": ("Snapshots written.", self.snapshots),
            }
        for name, (help_, v) in counters.items():
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {v}"]
        for name, (help_, v) in gauges.items():
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {float(v):.6g}"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _hist(name: str, base: str, h: _Histogram) -> list[str]:
        out = []
        cum = 0
        sep = "," if base else ""
        for b, c in zip(h.buckets, h.counts):
            cum += c
            out.append(f'{name}_bucket{{{base}{sep}le="{b:g}"}} {cum}')
        out.append(f'{name}_bucket{{{base}{sep}le="+Inf"}} {h.count}')
        braces = f"{{{base}}}" if base else ""
        out.append(f"{name}_sum{braces} {h.sum:.6g}")
        out.append(f"{name}_count{braces} {h.count}")
        return out
