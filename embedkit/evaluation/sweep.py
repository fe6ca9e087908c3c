"""Quality-vs-bytes sweep: every compression spec on the same float embeddings, one table.

For each method the compression pipeline is fitted on the corpus vectors (PQ, OPQ, ITQ and BEBR
all learn from the corpus they compress; none sees queries or relevance judgements), the corpus is
added to a flat :class:`~embedkit.compression.base.CodeIndex`, and the queries are searched
without and with float rescoring (the top ``k * oversample`` candidates re-ranked by the exact
inner product with the float corpus vectors, by :func:`embedkit.compression.rescore.rescore`, the
function :class:`~embedkit.retrieval.EmbeddingIndex` uses). Reported per run: nDCG@10, Recall@100,
bytes per vector (what the index stores per document; ``code_bytes`` is the code alone), fit
seconds and search milliseconds per query.

Example:
    .. code-block:: python

        rows = sweep([SweepMethod("binary", "binary"), SweepMethod("lsh", "lsh:64", {"nbits": 128})],
                     docs, queries, doc_ids, query_ids, qrels)
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embedkit.compression.rescore import rescore as rescore_rows

__all__ = ["SweepMethod", "evaluate_method", "pareto_front", "plot", "plot_figure", "sweep"]

logger = logging.getLogger(__name__)


@dataclass
class SweepMethod:
    """One line of the sweep.

    Args:
        name: label of the method (the line in the plot), e.g. ``"pq"``.
        spec: compression spec string, e.g. ``"pq:48x8"``; ignored when ``build`` is given.
        quantizer_kwargs: hyper-parameters of the spec's quantizer changed before fitting, through
            its ``set_params`` (e.g. BEBR's ``epochs``, LSH's ``nbits``).
        index_kwargs: extra arguments of ``new_index`` (e.g. BEBR's ``scoring="adc"``).
        build: alternative to ``spec``: ``build(docs) -> (code_size, search(Q, k) -> (scores, rows))``
            for anchors outside embedkit (e.g. sentence-transformers' ``ubinary``).
        label: free text for the results (defaults to the fitted pipeline's spec).
    """

    name: str
    spec: str = ""
    quantizer_kwargs: dict[str, Any] = field(default_factory=dict)
    index_kwargs: dict[str, Any] = field(default_factory=dict)
    build: Callable | None = None
    label: str = ""


def _run_dict(scores, rows, doc_ids, query_ids) -> dict[str, dict[str, float]]:
    return {
        qid: {doc_ids[r]: float(s) for s, r in zip(ss, rr) if r >= 0}
        for qid, ss, rr in zip(query_ids, scores, rows)
    }


def evaluate_method(method: SweepMethod, docs: np.ndarray, queries: np.ndarray, doc_ids: Sequence[str],
                    query_ids: Sequence[str], qrels: Mapping[str, Mapping[str, int]], *, k: int = 100,
                    oversample: int = 4, rescore: Sequence[bool] = (False, True), repeat: int = 2,
                    cache: dict | None = None, fit_vectors: np.ndarray | None = None,
                    fit_pairs: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Fit, index and search one method; one result row per rescoring setting.

    ``cache`` (a dict) reuses fitted pipelines between methods with the same spec and quantizer
    settings (e.g. one BEBR model searched with both scorings); reused fits report their fit time.
    ``fit_vectors`` (default: ``docs``) are what every learned codec is fitted on, e.g. the corpus
    plus other unlabelled text of the same encoder; anchors given as ``build`` see only ``docs``.
    ``fit_pairs`` (query vectors, relevant document vectors) go to the codecs that learn from pairs
    (``accepts_pairs``: bebr).
    """
    from embedkit.compression.spec import quantizer_from_spec
    from embedkit.retrieval.metrics import ndcg_at_k, recall_at_k

    docs = np.ascontiguousarray(docs, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    t0 = time.perf_counter()
    if method.build is not None:
        code_size, search = method.build(docs)
        stored_bytes = code_size
        spec = method.label or method.name
    else:
        key = (method.spec, tuple(sorted((k_, repr(v)) for k_, v in method.quantizer_kwargs.items())),
               fit_pairs is not None)
        if cache is not None and key in cache:
            pipe, fit_s = cache[key]
            t0 -= fit_s
        else:
            pipe = quantizer_from_spec(method.spec)
            pipe.quantizer.set_params(**method.quantizer_kwargs)
            pairs = fit_pairs if getattr(pipe.quantizer, "accepts_pairs", False) else None
            pipe.fit(docs if fit_vectors is None else np.ascontiguousarray(fit_vectors, dtype=np.float32), pairs=pairs)
            if cache is not None:
                cache[key] = (pipe, time.perf_counter() - t0)
        index = pipe.quantizer.new_index("flat", **method.index_kwargs)
        index.add(pipe.transform(docs))
        code_size = pipe.code_size
        stored_bytes = getattr(index, "bytes_per_vector", code_size)
        tq = pipe.transform(queries)
        spec = method.label or pipe.spec

        def search(Q, kk):
            return index.search(tq if Q is queries else pipe.transform(Q), kk)

    fit_s = time.perf_counter() - t0
    out = []
    for rs in rescore:
        kk = k * oversample if rs else k
        best = float("inf")
        for _ in range(max(1, repeat)):
            t = time.perf_counter()
            scores, rows = search(queries, kk)
            if rs:
                scores, rows = rescore_rows(queries, docs, rows, k)
            best = min(best, time.perf_counter() - t)
        run = _run_dict(scores, rows, list(doc_ids), list(query_ids))
        out.append({
            "method": method.name, "spec": spec, "bytes": int(stored_bytes), "code_bytes": int(code_size),
            "rescore": bool(rs),
            "ndcg@10": round(float(ndcg_at_k(run, qrels, 10)), 4),
            "recall@100": round(float(recall_at_k(run, qrels, 100)), 4),
            "fit_s": round(fit_s, 2), "search_ms_per_query": round(1000 * best / max(1, len(queries)), 4),
        })
    return out


def sweep(methods: Sequence[SweepMethod], docs, queries, doc_ids, query_ids, qrels, *, k: int = 100,
          oversample: int = 4, log: Callable[[str], None] | None = None, **kw) -> list[dict[str, Any]]:
    """Evaluate every method (see :func:`evaluate_method`); returns all result rows.

    Each row is logged at INFO level on this module's logger. ``log`` (a callback taking the line)
    is deprecated: configure logging instead.
    """
    if log is not None:
        warnings.warn("sweep(log=...) is deprecated; results are logged on the 'embedkit.evaluation.sweep' logger",
                      DeprecationWarning, stacklevel=2)
    rows = []
    kw.setdefault("cache", {})
    for m in methods:
        res = evaluate_method(m, docs, queries, doc_ids, query_ids, qrels, k=k, oversample=oversample, **kw)
        rows.extend(res)
        for r in res:
            line = (f"{r['method']:>12} {r['spec']:<22} {r['bytes']:>5} B  rescore={int(r['rescore'])}  "
                    f"nDCG@10 {r['ndcg@10']:.4f}  R@100 {r['recall@100']:.4f}  fit {r['fit_s']:.1f}s  "
                    f"{r['search_ms_per_query']:.3f} ms/q")
            logger.info("%s", line)
            if log is not None:
                log(line)
    return rows


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of (bytes, quality) points not dominated (fewer-or-equal bytes and higher-or-equal quality)."""
    front = []
    for i, (b, q) in enumerate(points):
        if not any((b2 <= b and q2 >= q) and (b2 < b or q2 > q) for j, (b2, q2) in enumerate(points) if j != i):
            front.append(i)
    return front


def _float_label(rows: Sequence[Mapping[str, Any]], float_ndcg: float, float_bytes: int | None) -> str:
    if float_bytes is None:
        float_bytes = next((int(r["bytes"]) for r in rows if r.get("spec") == "float" or r.get("method") == "float"), None)
    size = f" ({float_bytes} B)" if float_bytes is not None else ""
    return f"float32{size} {float_ndcg:.4f}"


def plot_figure(rows: Sequence[Mapping[str, Any]], *, rescore: bool = False, float_ndcg: float | None = None,
                float_bytes: int | None = None, title: str = "", anchors: Sequence[str] = (), caption: str = ""):
    """The matplotlib figure of :func:`plot` (the caller closes it).

    ``float_bytes`` labels the float line; by default the bytes of the sweep's ``float`` row (4 per
    dimension), omitted when there is none. Methods named in ``anchors`` (other libraries' methods)
    are drawn dashed with hollow markers and labelled "(anchor)"; every method gets its own marker so
    that coinciding points stay visible. ``caption`` is printed under the axes (data, subset, protocol).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 6.0 if caption else 5.5))
    names = list(dict.fromkeys(r["method"] for r in rows if r["rescore"] == rescore and r["method"] != "float"))
    markers = "osD^vP*Xhp<>"
    for i, name in enumerate(names):
        pts = sorted((r["bytes"], r["ndcg@10"]) for r in rows if r["method"] == name and r["rescore"] == rescore)
        anchor = name in anchors
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--" if anchor else "-", marker=markers[i % len(markers)],
                mfc="none" if anchor else None, ms=8 if anchor else 5, lw=1.2 if anchor else 2,
                label=f"{name} (anchor)" if anchor else name, zorder=3 if anchor else 2)
    if float_ndcg is not None:
        ax.axhline(float_ndcg, color="k", ls=":", lw=1, label=_float_label(rows, float_ndcg, float_bytes))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title or f"nDCG@10 vs bytes per vector ({'with' if rescore else 'without'} float rescoring)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7.5, ha="left", va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        fig.tight_layout()
    return fig


def plot(rows: Sequence[Mapping[str, Any]], path, *, rescore: bool = False, float_ndcg: float | None = None,
         float_bytes: int | None = None, title: str = "", anchors: Sequence[str] = (), caption: str = "") -> None:
    """nDCG@10 against bytes per vector (log scale), one line per method; written atomically to ``path``."""
    import io
    from pathlib import Path

    import matplotlib.pyplot as plt

    from embedkit._io import atomic_write_bytes

    fig = plot_figure(rows, rescore=rescore, float_ndcg=float_ndcg, float_bytes=float_bytes, title=title,
                      anchors=anchors, caption=caption)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
