"""Index building by budget: give bytes per vector (or RAM) and a latency, get the model size, compression,
rescoring and FAISS structure that measured best on a sample of the corpus.

Candidates (:mod:`embedkit.retrieval.tune_candidates`): the model's trained sizes (its Matryoshka /
Starbucks ladder when ``embedkit_sizes.json`` records one, else the full size plus ``mrl:D`` cuts),
every compression family at the budget, float16 rescoring depths, flat / IVF (``nprobe``) / HNSW
(``M``, ``efSearch``). No full grid is measured:

1. **codec stage**: every flat candidate within the budget is fitted on a sample (``fit_sample``, raised to
   the codec's ``recommended_fit_size`` (9,984 documents for 8-bit PQ/OPQ) where the corpus has them; OPQ's
   rotation from ``fit_sample`` documents with ``SCREEN_OPQ_NITER`` iterations instead of 50, and only where its
   PQ twin ranks among the best) and searched (cheap: one flat search of the held-out queries);
2. **index stage**: only the best ``keep`` codecs (and the best of each model size) get RAM and
   single-query latency measured; IVF and HNSW are tried only when flat search misses
   ``max_query_ms``, with ``nprobe`` / ``efSearch`` raised until the limit or flat's quality is reached.

Quality, without labels: **agreement@10**, the share of the exact top 10 (float search with the full
model) that a configuration returns, for held-out documents of the corpus used as queries (they are
not indexed). With ``queries`` and ``qrels``: **nDCG@10** on them. ``TuneResult.quality_metric`` says
which chose. Latency is the p50 of single-query search (transform, code search, rescoring; query
encoding apart, see ``encode_docs_per_s``) on the indexed sample.

Example:
    .. code-block:: python

        from embedkit.retrieval.tune import tune

        result = tune(texts, budget_bytes=48, max_query_ms=5)
        print(result.table())
        result.best                       # {'spec': 'pq:48x8', 'layers': 6, 'dim': 384, ...}
        index = result.build_index(texts, ids)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from embedkit.compression.base import default_nlist, hnsw_of, ivf_of, l2_normalize, single_thread_for_small_batches
from embedkit.compression.pq import OPQ_ROTATION_CENTROIDS
from embedkit.compression.rescore import rescore as rescore_rows
from embedkit.compression.spec import quantizer_from_spec
from embedkit.errors import BudgetError, EmbedkitError
from embedkit.retrieval.common import default_nprobe
from embedkit.retrieval.metrics import ndcg_at_k
from embedkit.retrieval.tune_candidates import (
    Candidate,
    codec_candidates,
    encoder_at,
    model_shape,
    parse_size,
    smallest_candidate,
)
from embedkit.retrieval.tune_report import format_table, pareto_flags, plot_rows, rows_frame

__all__ = ["AGREEMENT", "NDCG", "TuneResult", "agreement_at_k", "exact_top_k", "holdout_split", "parse_size",
           "encoder_at", "tune", "tune_embeddings"]

logger = logging.getLogger(__name__)

AGREEMENT = "agreement@10"
NDCG = "ndcg@10"
_NPROBE_LADDER = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_EF_LADDER = (16, 32, 64, 128, 256)
#: OPQ rotation iterations while screening (FAISS's default, used for the index finally built, is 50): the fit
#: is ~90% of the tuner's time with 50, and candidates rank alike with 10 (bench/autotune.py)
SCREEN_OPQ_NITER = 10


def exact_top_k(docs: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Rows of the ``k`` documents with the highest cosine to each query (exact float search; ties: smaller row)."""
    D = l2_normalize(np.asarray(docs, dtype=np.float32))
    Q = l2_normalize(np.asarray(queries, dtype=np.float32))
    k = min(k, len(D))
    out = np.empty((len(Q), k), dtype=np.int64)
    for i in range(0, len(Q), 256):
        S = Q[i:i + 256] @ D.T
        out[i:i + 256] = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return out


def agreement_at_k(rows: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |returned top ``k`` ∩ exact top ``k``| / ``k`` (``-1`` padding never counts)."""
    rows, truth = np.asarray(rows)[:, :k], np.asarray(truth)[:, :k]
    if len(truth) == 0:
        return 0.0
    hits = [len({int(r) for r in a if r >= 0} & {int(t) for t in b}) / k for a, b in zip(rows, truth)]
    return float(np.mean(hits))


def holdout_split(n: int, *, n_queries: int = 200, max_docs: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(doc_rows, query_rows)``: held-out documents used as queries (never indexed) and the documents to index.

    Raises:
        EmbedkitError: fewer than 20 documents.
    """
    if n < 20:
        raise EmbedkitError(f"the corpus has {n} documents; tuning needs at least 20 (held-out documents are its queries)")
    perm = np.random.default_rng(seed).permutation(n)
    nq = int(min(n_queries, max(5, n // 5)))
    return np.sort(perm[nq:nq + max_docs]), np.sort(perm[:nq])


@dataclass
class TuneResult:
    """What :func:`tune` measured: ``rows`` (one dict per configuration, best quality first), ``best`` (the
    chosen row, also flagged ``chosen``), ``quality_metric`` (``agreement@10`` or ``ndcg@10``: which one
    chose), ``settings`` (budgets, sample sizes, counts) and ``seconds``."""

    rows: list[dict]
    best: dict
    quality_metric: str
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    model: object = None

    def __post_init__(self):
        self.rows.sort(key=lambda r: (r["query_ms"] is None, -r["quality"], r["bytes_per_vector"]))

    @property
    def pareto(self) -> list[dict]:
        """The rows no other row beats on quality, bytes per vector and latency together."""
        return [r for r in self.rows if r.get("pareto")]

    def table(self, *, all_rows: bool = False) -> str:
        """The Pareto table (every fully measured row with ``all_rows``) as aligned text."""
        shown = [r for r in self.rows if r["query_ms"] is not None and (all_rows or r.get("pareto") or r.get("chosen"))]
        return format_table(shown, self.quality_metric)

    def to_frame(self):
        """The rows as a pandas DataFrame (needs pandas)."""
        return rows_frame(self.rows)

    def plot(self, path) -> None:
        """Quality against bytes per vector, Pareto front and the chosen configuration marked, as a PNG."""
        plot_rows(self.rows, path, self.quality_metric, self.settings)

    def tuning_record(self) -> dict:
        """What an index built from the chosen configuration records in its manifest (``tuning``)."""
        b = self.best
        keys = ("layers", "dim", "spec", "rescore", "index_type", "nprobe", "ef_search", "hnsw_m",
                "code_bytes_per_vector", "rescore_bytes_per_vector", "structure_bytes_per_vector", "bytes_per_vector",
                "ram_bytes", "query_ms", "quality", "encode_docs_per_s")
        return {**{k: b.get(k) for k in keys}, "quality_metric": self.quality_metric,
                **{k: self.settings.get(k) for k in ("budget_bytes", "max_ram", "max_query_ms", "sample_documents",
                                                     "queries", "codec_candidates", "configurations_measured")},
                "seconds": round(self.seconds, 2)}

    def to_dict(self) -> dict:
        return {"quality_metric": self.quality_metric, "best": self.best, "settings": self.settings,
                "seconds": round(self.seconds, 3), "rows": self.rows}

    def build_index(self, texts: Sequence[str], ids: Sequence[str] | None = None, metadata=None, **kwargs):
        """Build an :class:`~embedkit.retrieval.index.EmbeddingIndex` of the chosen configuration over ``texts``
        (the whole corpus), with the chosen model size; its manifest records :meth:`tuning_record`."""
        from embedkit.retrieval.index import EmbeddingIndex

        b = self.best
        full = tuple(self.settings["model_sizes"][0])
        enc = encoder_at(self.model, (b["layers"], b["dim"]), full)
        index = EmbeddingIndex.build(texts, ids, metadata, model=enc, spec=b["spec"], index_type=b["index_type"],
                                     rescore=b["rescore"], nprobe=b["nprobe"], ef_search=b["ef_search"],
                                     hnsw_m=b["hnsw_m"] or 32, **kwargs)
        index.tuning = self.tuning_record()
        return index


class _Measurer:
    """Fits each (size, spec) once and measures configurations on the same sample and queries."""

    def __init__(self, docs, queries, *, truth=None, qrels=None, doc_ids=None, query_ids=None, n_latency=50,
                 fit_sample=None):
        self.docs, self.queries, self.truth, self.qrels = docs, queries, truth, qrels
        self.fit_sample = fit_sample
        self.doc_ids, self.query_ids, self.n_latency = doc_ids, query_ids, n_latency
        self.fitted: dict = {}
        self.fit_rows: dict = {}  # (size, spec) -> documents its codec was fitted on

    def fit(self, c: Candidate):
        key = (c.size, c.spec)
        if key not in self.fitted:
            t = time.perf_counter()
            # FAISS k-means on a sample runs faster on one thread than waking OpenMP workers on a busy machine
            X = self.docs[c.size]
            pipe = quantizer_from_spec(c.spec)
            # cheap stage: codecs learn from a subsample, never smaller than their codebooks need (FAISS's 39 per
            # centroid: 9,984 for 8-bit PQ); under-trained, a family ranks below ones its full fit would beat
            want = max(self.fit_sample or 0, pipe.quantizer.recommended_fit_size)
            if self.fit_sample and len(X) > want:
                X = X[np.sort(np.random.default_rng(0).choice(len(X), want, replace=False))]
            if self.fit_sample and "niter" in pipe.quantizer.param_names():  # OPQ, screened with a cheaper fit:
                # fewer rotation iterations, the rotation from the screening sample; the codebooks see all of `X`
                rotation = max(self.fit_sample, OPQ_ROTATION_CENTROIDS)
                pipe.quantizer.set_params(niter=SCREEN_OPQ_NITER, rotation_sample=rotation)
            with single_thread_for_small_batches(len(X), threshold=50_000):
                pipe.fit(X)
            Xt = np.ascontiguousarray(pipe.transform(self.docs[c.size]), dtype=np.float32)
            self.fitted[key] = (pipe, Xt, time.perf_counter() - t)
            self.fit_rows[key] = len(X)
        return self.fitted[key]

    def build(self, c: Candidate):
        """The code index of ``c`` over the sample (what ``EmbeddingIndex`` builds), with its search effort set."""
        pipe, Xt, _ = self.fit(c)
        n = len(Xt)
        nlist = default_nlist(n) if c.index_type == "ivf" else None
        code_index = pipe.quantizer.new_index(c.index_type, nlist=nlist, hnsw_m=c.hnsw_m or 32, train_X=Xt)
        code_index.add(Xt)
        code_index.fixed_search_params = True
        return code_index

    @staticmethod
    def set_effort(code_index, c: Candidate) -> None:
        index = getattr(code_index, "index", None)
        if c.index_type == "ivf" and ivf_of(index) is not None:
            ivf = ivf_of(index)
            ivf.nprobe = min(int(c.nprobe), int(ivf.nlist))
        elif c.index_type == "hnsw" and hnsw_of(index) is not None:
            hnsw_of(index).hnsw.efSearch = int(c.ef_search)

    def search(self, c: Candidate, code_index, Q: np.ndarray, k: int = 10) -> np.ndarray:
        pipe, Xt, _ = self.fit(c)
        Qt = pipe.transform(l2_normalize(Q))
        kk = min(len(Xt), k * (c.rescore or 1))
        _, rows = code_index.search(Qt, kk)
        if c.rescore:
            _, rows = rescore_rows(Qt, self._f16(c), rows, k)
        return rows[:, :k]

    def _f16(self, c: Candidate) -> np.ndarray:
        key = ("f16", c.size, c.spec)
        if key not in self.fitted:
            self.fitted[key] = self.fit(c)[1].astype(np.float16)
        return self.fitted[key]

    def quality(self, c: Candidate, code_index) -> float:
        rows = self.search(c, code_index, self.queries[c.size])
        if self.qrels is None:
            return agreement_at_k(rows, self.truth)
        run = {q: {self.doc_ids[r]: float(-i) for i, r in enumerate(rr) if r >= 0} for q, rr in zip(self.query_ids, rows)}
        return float(ndcg_at_k(run, self.qrels, 10))

    def latency_ms(self, c: Candidate, code_index) -> float:
        Q = self.queries[c.size]
        self.search(c, code_index, Q[:1])  # warm-up
        times = []
        for i in range(min(self.n_latency, len(Q))):
            t = time.perf_counter()
            self.search(c, code_index, Q[i:i + 1])
            times.append(time.perf_counter() - t)
        return float(np.percentile(times, 50) * 1e3)

    def ram(self, c: Candidate, code_index) -> tuple[int, float]:
        """(bytes in RAM after load for the sample, measured structure bytes per vector)."""
        pipe, Xt, _ = self.fit(c)
        n = len(Xt)
        quantizer = sum(np.asarray(v).nbytes for s in pipe.stages for v in s.state()[1].values())
        ram = len(code_index.to_bytes()) + quantizer + n * c.rescore_bytes
        structure = float(c.structure_bytes)
        inner = hnsw_of(getattr(code_index, "index", None)) if c.index_type == "hnsw" else None
        if inner is not None:
            h = inner.hnsw
            structure = (h.neighbors.size() * 4 + h.levels.size() * 4 + h.offsets.size() * 8) / n
        return int(ram), structure


def _row(m: _Measurer, c: Candidate, quality: float, *, stage: str, code_index=None, n_corpus: int,
         encode_rate: Mapping | None, metric: str) -> dict:
    pipe, Xt, fit_s = m.fit(c)
    row = {**c.as_dict(), "label": c.label, "quality": round(quality, 4), "quality_metric": metric, "stage": stage,
           "fit_seconds": round(fit_s, 3), "fit_documents": m.fit_rows.get((c.size, c.spec)),
           "encode_docs_per_s": None if not encode_rate else encode_rate.get(c.size),
           "query_ms": None, "ram_bytes": None, "fixed_bytes": None}
    if code_index is not None:
        ram, structure = m.ram(c, code_index)
        per_vector = c.code_bytes + c.rescore_bytes + structure
        fixed = max(0, ram - len(Xt) * per_vector)
        row.update(structure_bytes_per_vector=round(structure, 1), bytes_per_vector=round(per_vector, 1),
                   fixed_bytes=int(fixed), ram_bytes=int(fixed + n_corpus * per_vector),
                   query_ms=round(m.latency_ms(c, code_index), 4))
    return row


def tune_embeddings(docs: Mapping[tuple[int, int], np.ndarray], queries: Mapping[tuple[int, int], np.ndarray], *,
                    full_size: tuple[int, int], budget_bytes: float | None = None, max_ram: int | None = None,
                    max_query_ms: float | None = None, qrels: Mapping | None = None, doc_ids: Sequence[str] | None = None,
                    query_ids: Sequence[str] | None = None, n_corpus: int | None = None,
                    encode_rate: Mapping[tuple[int, int], float] | None = None, mrl: bool = True,
                    rescore_depths: tuple[int, ...] = (4, 8), index_types: Sequence[str] = ("flat", "ivf", "hnsw"),
                    hnsw_ms: Sequence[int] = (8, 16, 32), keep: int = 4, exhaustive: bool = False,
                    fit_sample: int | None = 2000, min_docs_per_s: float | None = None) -> TuneResult:
    """Tune on vectors already encoded: ``docs[size]`` (the documents to index) and ``queries[size]`` at every
    model size ``(layers, dim)``; ``full_size`` is the full model's. Without ``qrels`` the queries are held-out
    documents and quality is agreement@10 with exact float search at ``full_size``; with ``qrels`` (and
    ``doc_ids``, ``query_ids``) it is nDCG@10. ``n_corpus`` (default: the sample) scales RAM to the whole corpus.
    ``exhaustive=True`` measures the full grid (every member of every codec family within the budget, every
    rescoring cut) under every structure and search effort, each codec fitted on all documents: the ground
    truth the pruned search is compared with. Otherwise codecs are fitted on ``fit_sample`` documents, or on as
    many as the codec's ``recommended_fit_size`` (FAISS's 39 per centroid) when that is more: a smaller sample
    under-trains 8-bit codebooks and ranks PQ/OPQ below 4-bit codecs that the built index's full fit beats.

    Raises:
        BudgetError: (one line) a budget below the smallest candidate, or no configuration within the latency.
    """
    t0 = time.perf_counter()
    if budget_bytes is None and max_ram is None:
        raise EmbedkitError("give a budget: budget_bytes (bytes per vector, --budget-bytes) or max_ram (--max-ram)")
    if full_size not in docs:
        raise EmbedkitError(f"docs has no vectors for the full model size {full_size}")
    n = len(docs[full_size])
    n_corpus = int(n_corpus or n)
    per_vector = min(x for x in (budget_bytes, None if max_ram is None else max_ram / n_corpus) if x is not None)
    metric = AGREEMENT if qrels is None else NDCG
    truth = exact_top_k(docs[full_size], queries[full_size], 10) if qrels is None else None
    m = _Measurer(docs, queries, truth=truth, qrels=qrels, doc_ids=doc_ids, query_ids=query_ids,
                  fit_sample=None if exhaustive else fit_sample)
    sizes = all_sizes = sorted(docs, key=lambda s: (-s[0], -s[1]))
    if min_docs_per_s is not None:
        if not encode_rate:
            raise EmbedkitError("min_docs_per_s needs encode_rate (documents per second for each model size)")
        fast_sizes = [s for s in sizes if encode_rate.get(s, 0.0) >= min_docs_per_s]
        if not fast_sizes:
            top = max(sizes, key=lambda s: encode_rate.get(s, 0.0))
            raise BudgetError(f"--min-docs-per-s {min_docs_per_s:g}: no model size encodes that fast; the fastest "
                              f"measured, {top[0]} layers x {top[1]} dims, did {encode_rate.get(top, 0.0):g} "
                              f"documents per second")
        sizes = fast_sizes
    cands = [c for s in sizes for c in codec_candidates(*s, per_vector, n_train=n, mrl=mrl and s == full_size,
                                                         rescore_depths=tuple(rescore_depths), grid=exhaustive)]
    if not cands:
        small = smallest_candidate(sizes, n_train=n)
        what = (f"--budget-bytes {budget_bytes:g}" if budget_bytes is not None and per_vector == budget_bytes
                else f"--max-ram {max_ram} bytes ({per_vector:.2f} bytes per vector for {n_corpus:,} documents)")
        raise BudgetError(f"{what}: smaller than any candidate; the smallest needs {small.bytes_per_vector} bytes "
                          f"per vector ({small.spec} at {small.layers} layers x {small.dim} dims)")
    logger.info("codec stage: %d candidates within %.1f bytes per vector", len(cands), per_vector)
    rows, flat_indexes = [], {}

    def measure(group):
        for c in group:  # stage 1: flat search, quality only
            code_index = m.build(c)
            flat_indexes[c] = code_index
            rows.append(_row(m, c, m.quality(c, code_index), stage="codec", n_corpus=n_corpus,
                             encode_rate=encode_rate, metric=metric))

    # OPQ is PQ plus a learned rotation and costs 10x its fit: tried only where its PQ twin ranks among the best
    slow = [c for c in cands if c.spec.split(",")[-1].startswith("opq:")]
    cands = [c for c in cands if c not in slow]
    measure(cands)
    if slow and not exhaustive:
        top = {(c.size, c.spec.replace("pq:", "opq:")) for _, c in sorted(zip(rows, cands), key=lambda rc: -rc[0]["quality"])[:keep]}
        slow = [c for c in slow if (c.size, c.spec) in top]
    cands += slow
    measure(slow)
    order = sorted(range(len(cands)), key=lambda i: (-rows[i]["quality"], cands[i].bytes_per_vector))
    chosen = order[:keep] + [next(i for i in order if cands[i].size == s) for s in sizes
                             if any(c.size == s for c in cands)]
    survivors = [cands[i] for i in (range(len(cands)) if exhaustive else dict.fromkeys(chosen))]
    full_rows = []
    for c in survivors:  # stage 2: RAM, latency, and other structures when flat is too slow
        flat = _row(m, c, rows[cands.index(c)]["quality"], stage="index", code_index=flat_indexes[c],
                    n_corpus=n_corpus, encode_rate=encode_rate, metric=metric)
        full_rows.append(flat)
        if not exhaustive and (max_query_ms is None or flat["query_ms"] <= max_query_ms):
            continue
        full_rows += _structures(m, c, flat, per_vector, max_query_ms, index_types, hnsw_ms, exhaustive,
                                 n_corpus=n_corpus, encode_rate=encode_rate, metric=metric)
    flat_indexes.clear()
    measured = full_rows + [r for r, c in zip(rows, cands) if c not in survivors]
    best = _pick(full_rows, per_vector, budget_bytes, max_ram, max_query_ms)
    for r in measured:
        r["chosen"] = r is best
    pareto_flags(full_rows)
    return TuneResult(rows=measured, best=best, quality_metric=metric, seconds=time.perf_counter() - t0,
                      settings={"budget_bytes": budget_bytes, "max_ram": max_ram, "max_query_ms": max_query_ms,
                                "bytes_per_vector_limit": round(per_vector, 3), "sample_documents": n,
                                "queries": len(queries[full_size]), "corpus_documents": n_corpus,
                                "model_sizes": [list(s) for s in all_sizes],
                                "model_sizes_tried": [list(s) for s in sizes], "min_docs_per_s": min_docs_per_s,
                                "exhaustive": exhaustive, "keep": keep,
                                "codec_candidates": len(cands), "configurations_measured": len(full_rows)})


def _structures(m: _Measurer, c: Candidate, flat: dict, budget: float, max_ms, index_types, hnsw_ms, exhaustive,
                **kw) -> list[dict]:
    """IVF (``nprobe`` ladder) and HNSW (``M`` within the budget, ``efSearch`` ladder) rows for codec ``c``."""
    out = []
    pipe, Xt, _ = m.fit(c)
    n = len(Xt)
    index_types = [t for t in index_types if t in getattr(pipe.quantizer, "backends", ("flat", "ivf", "hnsw"))]
    plans = []
    if "ivf" in index_types and c.bytes_per_vector + 8 <= budget and n >= 2 * 39:
        nlist = default_nlist(n)
        ladder = sorted({p for p in _NPROBE_LADDER if p < nlist} | {default_nprobe(nlist), nlist})
        plans.append((c.with_index("ivf", nprobe=1), [{"nprobe": p} for p in ladder]))
    for hm in hnsw_ms if "hnsw" in index_types else ():
        cand = c.with_index("hnsw", hnsw_m=hm, ef_search=16)
        if cand.bytes_per_vector <= budget:
            plans.append((cand, [{"ef_search": e} for e in _EF_LADDER]))
    for base, efforts in plans:
        code_index = m.build(base)
        for effort in efforts:
            cand = base.with_index(base.index_type, hnsw_m=base.hnsw_m, **{"nprobe": base.nprobe,
                                                                            "ef_search": base.ef_search, **effort})
            m.set_effort(code_index, cand)
            row = _row(m, cand, m.quality(cand, code_index), stage="index", code_index=code_index, **kw)
            out.append(row)
            if not exhaustive and (row["query_ms"] > (max_ms or float("inf")) or row["quality"] >= flat["quality"]):
                break  # more effort only costs time from here
    return out


def _pick(rows: list[dict], per_vector: float, budget_bytes, max_ram, max_query_ms) -> dict:
    ok = [r for r in rows if r["bytes_per_vector"] <= per_vector + 1e-9 and (max_ram is None or r["ram_bytes"] <= max_ram)]
    if not ok:
        small = min(rows, key=lambda r: r["ram_bytes"])
        raise BudgetError(f"--max-ram {max_ram} bytes: no configuration fits once its fixed costs (codebooks, "
                          f"centroids) are counted; the smallest measured needs {small['ram_bytes']} bytes ({small['label']})")
    fast = [r for r in ok if max_query_ms is None or r["query_ms"] <= max_query_ms]
    if not fast:
        quick = min(ok, key=lambda r: r["query_ms"])
        raise BudgetError(f"--max-query-ms {max_query_ms:g}: no configuration within the budget searches that fast; "
                          f"the fastest measured took {quick['query_ms']:.3f} ms per query ({quick['label']})")
    return max(fast, key=lambda r: (r["quality"], -r["bytes_per_vector"], -r["query_ms"]))


def tune(texts: Sequence[str], ids: Sequence[str] | None = None, *, model=None, budget_bytes: float | None = None,
         max_ram: int | str | None = None, max_query_ms: float | None = None, queries: Mapping[str, str] | None = None,
         qrels: Mapping[str, Mapping[str, int]] | None = None, n_queries: int = 200, max_docs: int = 20000,
         seed: int = 0, batch_size: int = 64, show_progress: bool = False, throughput_texts: int = 32,
         **options) -> TuneResult:
    """Measure candidate configurations on a sample of ``texts`` and return the table (see the module docstring).

    Args:
        texts: the corpus; ``ids`` its document ids (needed with ``qrels``; default: ``"0"``, ``"1"``, ...).
        model: encoder object, folder or name (None: the default model). A folder with ``embedkit_sizes.json``
            adds its trained sizes as candidates.
        budget_bytes: code + rescoring + structure bytes per vector (docstore apart).
        max_ram: bytes (or a size such as ``"200MB"``) of the index in RAM after load, fixed costs included,
            for the whole corpus.
        max_query_ms: p50 single-query search latency limit (query encoding apart).
        queries, qrels: judged queries; quality is then nDCG@10 on them instead of agreement@10.
        n_queries, max_docs: held-out documents used as queries, and documents indexed, in the sample.
        throughput_texts: texts encoded (outside the cache) to measure each model size's encoding speed.
        min_docs_per_s: (in ``options``) only model sizes that encode at least this many documents per second
            (measured on ``throughput_texts`` of the corpus) are candidates.
        **options: passed to :func:`tune_embeddings` (``mrl``, ``rescore_depths``, ``index_types``,
            ``hnsw_ms``, ``keep``, ``exhaustive``).

    Raises:
        BudgetError: a budget no candidate meets (one line naming it and the smallest candidate).
    """
    from embedkit.cache import encode_cached

    if budget_bytes is None and max_ram is None:
        raise EmbedkitError("give a budget: budget_bytes (bytes per vector, --budget-bytes) or max_ram (--max-ram)")
    if isinstance(max_ram, str):
        max_ram = parse_size(max_ram)
    texts = list(texts)
    ids = [str(i) for i in range(len(texts))] if ids is None else [str(i) for i in ids]
    enc, sizes, ladder = model_shape(model)
    encoders = {size: encoder_at(enc, size, sizes[0]) for size in sizes}
    if qrels is None:
        doc_rows, q_rows = holdout_split(len(texts), n_queries=n_queries, max_docs=max_docs, seed=seed)
        q_texts, q_ids, judged = [texts[i] for i in q_rows], None, None
    else:
        judged = {q: r for q, r in qrels.items() if q in (queries or {})}
        if not judged:
            raise EmbedkitError("no query in the qrels has a text in the queries")
        wanted = {d for r in judged.values() for d in r}
        pos = {d: i for i, d in enumerate(ids)}
        rest = np.random.default_rng(seed).permutation([i for i, d in enumerate(ids) if d not in wanted])
        doc_rows = np.sort(np.concatenate([[pos[d] for d in wanted if d in pos], rest])[:max(max_docs, len(wanted))]
                           .astype(np.int64))
        q_ids = sorted(judged)
        q_texts = [queries[q] for q in q_ids]
    doc_texts = [texts[i] for i in doc_rows]
    docs, qvecs, rate = {}, {}, {}
    for size, e in encoders.items():
        docs[size] = encode_cached(e, doc_texts, batch_size=batch_size, show_progress=show_progress,
                                   desc=f"encoding {size[0]}L/{size[1]}d")
        qvecs[size] = encode_cached(e, q_texts, batch_size=batch_size, show_progress=False)
        sample = doc_texts[:throughput_texts]
        times = []
        for _ in range(2):  # the faster of two passes: the first also pays warm-up
            t = time.perf_counter()
            e.encode(sample, batch_size=batch_size, show_progress_bar=False)
            times.append(time.perf_counter() - t)
        rate[size] = round(len(sample) / max(min(times), 1e-9), 2)
    result = tune_embeddings(docs, qvecs, full_size=sizes[0], budget_bytes=budget_bytes, max_ram=max_ram,
                             max_query_ms=max_query_ms, qrels=judged, doc_ids=[ids[i] for i in doc_rows],
                             query_ids=q_ids, n_corpus=len(texts), encode_rate=rate, **options)
    result.settings["trained_sizes"] = None if ladder is None else {"method": ladder["method"],
                                                                    "sizes": [list(s) for s in ladder["sizes"]]}
    result.model = enc
    return result
