"""Search over BEBR's multi-plane binary codes: symmetric distance computation (SDC) by popcount.

A BEBR code of a vector is ``u`` binary planes ``b_0 .. b_{u-1}`` in ``{-1, +1}^m``, stored packed
(``m/8`` bytes per plane, planes concatenated). It decodes to ``mean + P y`` with
``y = sum_t alpha_t b_t`` and ``P`` with orthonormal columns (see :mod:`embedkit.compression.bebr`).
The symmetric score comes in two forms (the quantizer's ``symmetric``):

* ``"centred"`` (default): ``<P y_q, P y_d> = <y_q, y_d> = sum_{t,s} w_ts (m - 2 hamming(b_t, b'_s))``
  with ``w = alpha alpha^T``: popcounts only, nothing stored beside the code. With one plane this is a
  monotone function of the Hamming distance, so a FAISS binary index returns the exact top-k at
  Hamming speed (no re-scoring).
* ``"decoded"``: the inner product of the two decoded vectors,
  ``|mean|^2 + <c, y_q> + <c, y_d> + <y_q, y_d>`` with ``c = P^T mean``; :class:`BEBRIndex` keeps
  the per-document term ``<c, y_d>`` as one float32 per document (:attr:`BEBRIndex.bytes_per_vector`
  counts it).

Why centred is the default: measured in ``bench/bebr.py`` on two collections; the per-document
term is computed from the codes themselves, and on a collection where it is noisy it costs more than it
adds. :func:`sdc_scores` evaluates ``<y_q, y_d>`` with popcounts over the packed planes (FAISS'
``hammings`` kernel when the plane is a whole number of 64-bit words, else ``numpy.bitwise_count``);
:func:`sdc_scores_reference` is the slow unpack-and-multiply definition the tests check it against.
"""

from __future__ import annotations

import io

import numpy as np

from embedkit.compression.base import CodeIndex, check_backend, default_nlist
from embedkit.errors import EmbedkitError, IndexFormatError
from embedkit.validation import check_positive_int

__all__ = ["BEBRIndex", "EXHAUSTIVE_LIMIT", "hamming_matrix", "sdc_scores", "sdc_scores_reference", "unpack_planes"]

#: corpora up to this size are scored exhaustively; larger ones get first-plane candidates
EXHAUSTIVE_LIMIT = 50_000


def hamming_matrix(a: np.ndarray, b: np.ndarray, *, use_faiss: bool = True) -> np.ndarray:
    """All-pairs Hamming distances ``(len(a), len(b))`` (int32) between packed uint8 codes."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    b = np.ascontiguousarray(b, dtype=np.uint8)
    nbytes = a.shape[1]
    if b.shape[1] != nbytes:
        raise EmbedkitError(f"codes of {nbytes} and {b.shape[1]} bytes cannot be compared")
    out = np.empty((len(a), len(b)), dtype=np.int32)
    if len(a) == 0 or len(b) == 0:
        return out
    if use_faiss and nbytes % 8 == 0:
        import faiss

        faiss.hammings(faiss.swig_ptr(a), faiss.swig_ptr(b), len(a), len(b), nbytes, faiss.swig_ptr(out))
        return out
    word = np.uint64 if nbytes % 8 == 0 else np.uint8
    av, bv = a.view(word), b.view(word)
    step = max(1, 2_000_000 // max(1, len(b) * av.shape[1]))
    for i in range(0, len(a), step):
        out[i : i + step] = np.bitwise_count(av[i : i + step, None, :] ^ bv[None, :, :]).sum(axis=-1, dtype=np.int32)
    return out


def sdc_scores(q_codes: np.ndarray, d_codes: np.ndarray, weights: np.ndarray, m: int, *, use_faiss: bool = True) -> np.ndarray:
    """``<y_q, y_d>`` for every query/document pair from popcounts over the packed planes.

    Args:
        q_codes, d_codes: ``(n, u*m/8)`` uint8 codes (planes concatenated).
        weights: ``(u, u)`` plane-pair weights ``w_ts`` (``alpha_t * alpha_s`` for BEBR).
        m: bits per plane.
    """
    u = weights.shape[0]
    pb = m // 8
    scores = np.zeros((len(q_codes), len(d_codes)), dtype=np.float32)
    total = float(weights.sum()) * m
    for t in range(u):
        qt = q_codes[:, t * pb : (t + 1) * pb]
        for s in range(u):
            h = hamming_matrix(qt, d_codes[:, s * pb : (s + 1) * pb], use_faiss=use_faiss)
            scores -= np.float32(2.0 * weights[t, s]) * h
    scores += np.float32(total)
    return scores


def unpack_planes(codes: np.ndarray, u: int, m: int) -> np.ndarray:
    """``(n, u, m)`` +-1 float planes of packed codes."""
    bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1)[:, : u * m].reshape(len(codes), u, m)
    return bits.astype(np.float32) * 2 - 1


def sdc_scores_reference(q_codes, d_codes, weights, m) -> np.ndarray:
    """The definition: unpack, decode ``y = sum_t alpha_t b_t`` (``w = alpha alpha^T``) and multiply.

    Works for any symmetric ``weights`` (not only rank one): ``sum_ts w_ts <b_t, b'_s>``.
    """
    u = weights.shape[0]
    Bq, Bd = unpack_planes(q_codes, u, m).astype(np.float64), unpack_planes(d_codes, u, m).astype(np.float64)
    return np.einsum("ts,qtm,dsm->qd", weights, Bq, Bd)


def _topk(scores: np.ndarray, k: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row (descending score, ties by lower row), padded with -1 rows / -inf scores."""
    nq, n = scores.shape
    kk = min(k, n)
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_r = np.full((nq, k), -1, dtype=np.int64)
    if kk == 0:
        return out_s, out_r
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (nq, 1))
    ps = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -ps), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    out_s[:, :kk] = np.take_along_axis(ps, order, axis=1)
    out_r[:, :kk] = idx if rows is None else rows[idx]
    return out_s, out_r


class BEBRIndex(CodeIndex):
    """A :class:`CodeIndex` over BEBR codes: exhaustive SDC, or first-plane candidates then SDC.

    Args:
        quantizer: the fitted :class:`~embedkit.compression.bebr.BEBRQuantizer` (encodes added
            and query vectors, gives the plane weights and the asymmetric projection).
        backend: ``flat`` (exhaustive SDC up to ``exhaustive_limit`` codes, else candidates from a
            FAISS ``IndexBinaryFlat`` over the first plane), ``hnsw`` or ``ivf`` (candidates always
            from a FAISS ``IndexBinaryHNSW`` / ``IndexBinaryIVF`` over the first plane).
        scoring: ``"sdc"`` (query binarized too; the quantizer's ``symmetric`` score from popcounts)
            or ``"adc"`` (float query against the decoded codes: ``<q, decode(code)>``, more accurate,
            slower).
        candidates: how many first-plane candidates per requested result (at least 256 in all).
    """

    def __init__(self, quantizer, backend: str = "flat", *, scoring: str = "sdc", candidates: int = 10,
                 exhaustive_limit: int = EXHAUSTIVE_LIMIT, hnsw_m: int = 32, nlist: int | None = None,
                 symmetric: str | None = None):
        if scoring not in ("sdc", "adc"):
            raise EmbedkitError(f"BEBR scoring must be 'sdc' or 'adc', got {scoring!r}")
        symmetric = symmetric if symmetric is not None else getattr(quantizer, "symmetric", "decoded")
        if symmetric not in ("centred", "decoded"):
            raise EmbedkitError(f"BEBR symmetric must be 'centred' or 'decoded', got {symmetric!r}")
        self.symmetric = symmetric
        self.q = quantizer
        self.backend = check_backend(backend)
        self.scoring = scoring
        self.candidates = int(candidates)
        self.exhaustive_limit = int(exhaustive_limit)
        self.hnsw_m = int(hnsw_m)
        self.nlist = None if nlist is None else check_positive_int(nlist, "nlist (IVF lists, --nlist)")
        self.codes = np.zeros((0, quantizer.code_size), dtype=np.uint8)
        #: ``<P^T mean, y_d>`` per document (the SDC score's per-document term)
        self.doc_terms = np.zeros(0, dtype=np.float32)
        self._cand = None  # lazily built FAISS index over plane 0

    @property
    def bytes_per_vector(self) -> int:
        """Stored bytes per document: the code, plus the float32 per-document term for decoded SDC."""
        return int(self.q.code_size) + (4 if self._decoded else 0)

    @property
    def _decoded(self) -> bool:
        return self.scoring == "sdc" and self.symmetric == "decoded"

    @property
    def _hamming_exact(self) -> bool:
        """One plane, centred SDC: the score is ``alpha^2 (m - 2 hamming)``, so Hamming order is exact."""
        return self.scoring == "sdc" and not self._decoded and self.q.nbits_ == 1

    @property
    def ntotal(self) -> int:
        return len(self.codes)

    def add(self, X: np.ndarray) -> None:
        self.add_codes(self.q.encode(X))

    def add_codes(self, codes: np.ndarray) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] != self.q.code_size:
            raise EmbedkitError(f"BEBR codes must have shape (n, {self.q.code_size}), got {codes.shape}")
        self.codes = np.concatenate([self.codes, codes]) if len(self.codes) else codes.copy()
        terms = self.q.code_offsets(codes) if self._decoded else np.zeros(len(codes), np.float32)
        self.doc_terms = np.concatenate([self.doc_terms, terms])
        self._cand = None

    def remove(self, rows: np.ndarray) -> None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[(rows >= 0) & (rows < self.ntotal)]
        if len(rows):
            self.codes = np.delete(self.codes, rows, axis=0)
            self.doc_terms = np.delete(self.doc_terms, rows)
            self._cand = None

    # -- scoring ----------------------------------------------------------------------------
    def _score(self, Q: np.ndarray, q_codes: np.ndarray | None, d_codes: np.ndarray,
               d_terms: np.ndarray | None = None) -> np.ndarray:
        if self.scoring == "sdc":
            scores = sdc_scores(q_codes, d_codes, self.q.plane_weights(), self.q.width_)
            if not self._decoded:
                return scores
            q_terms = self.q.code_offsets(q_codes) + np.float32(self.q.mean_norm2())
            return scores + d_terms[None, :] + q_terms[:, None]
        return self.q.asymmetric_scores(Q, d_codes)

    def _candidate_index(self):
        import faiss

        if self._cand is not None:
            return self._cand
        m = self.q.width_
        plane0 = np.ascontiguousarray(self.codes[:, : m // 8])
        if self.backend == "hnsw":
            index = faiss.IndexBinaryHNSW(m, self.hnsw_m)
        elif self.backend == "ivf":
            # lists need training vectors: after removals there may be fewer codes than nlist
            nlist = min(self.nlist or default_nlist(len(plane0)), len(plane0))
            quant = faiss.IndexBinaryFlat(m)
            index = faiss.IndexBinaryIVF(quant, m, nlist)
            index.own_fields = True
            quant.this.disown()
            index.train(plane0)
            index.nprobe = min(16, nlist)
        else:
            index = faiss.IndexBinaryFlat(m)
        index.add(plane0)
        self._cand = index
        return index

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(k)
        if k < 1:
            raise EmbedkitError(f"k must be >= 1, got {k}")
        Q = self.q._check_input(Q, "queries")
        q_codes = self.q.encode(Q) if self.scoring == "sdc" else None
        n = self.ntotal
        if n == 0:
            return np.full((len(Q), k), -np.inf, np.float32), np.full((len(Q), k), -1, np.int64)
        if self._hamming_exact and self.backend == "flat":
            return self._hamming_search(q_codes, k)
        if self.backend == "flat" and n <= self.exhaustive_limit:
            out_s, out_r = [], []
            step = max(1, 20_000_000 // max(n, 1))
            for i in range(0, len(Q), step):
                sc = self._score(Q[i : i + step], None if q_codes is None else q_codes[i : i + step], self.codes,
                                 self.doc_terms)
                s, r = _topk(sc, k)
                out_s.append(s)
                out_r.append(r)
            return np.concatenate(out_s), np.concatenate(out_r)
        # first-plane candidates, then SDC/ADC on the candidates only
        index = self._candidate_index()
        nc = min(n, max(k * self.candidates, 256))
        if self.backend == "hnsw":
            index.hnsw.efSearch = max(int(index.hnsw.efSearch), nc)
        pb = self.q.width_ // 8
        qc = q_codes if q_codes is not None else self.q.encode(Q)
        _, cand = index.search(np.ascontiguousarray(qc[:, :pb]), nc)
        scores = np.full((len(Q), k), -np.inf, np.float32)
        rows = np.full((len(Q), k), -1, np.int64)
        for i in range(len(Q)):
            c = cand[i][cand[i] >= 0]
            sc = self._score(Q[i : i + 1], None if q_codes is None else q_codes[i : i + 1], self.codes[c], self.doc_terms[c])
            scores[i], rows[i] = (a[0] for a in _topk(sc, k, c))
        return scores, rows

    def _hamming_search(self, q_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of one-plane centred SDC straight from FAISS' binary index (IndexBinaryFlat)."""
        index = self._candidate_index()
        n = self.ntotal
        kk = min(k, n)
        D, rows = index.search(np.ascontiguousarray(q_codes), kk)
        w = np.float32(self.q.plane_weights()[0, 0])
        scores = np.full((len(q_codes), k), -np.inf, np.float32)
        out = np.full((len(q_codes), k), -1, np.int64)
        scores[:, :kk] = w * (np.float32(self.q.width_) - 2 * D.astype(np.float32))
        out[:, :kk] = rows
        return scores, out

    # -- persistence (np.savez in memory; no pickle) -----------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = np.array([self.q.code_size, self.candidates, self.exhaustive_limit, self.hnsw_m, self.nlist or 0], dtype=np.int64)
        np.savez(buf, codes=self.codes, meta=meta, scoring=np.array(self.scoring), symmetric=np.array(self.symmetric))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, quantizer, data: bytes, backend: str) -> BEBRIndex:
        try:
            with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as z:
                codes, meta, scoring = z["codes"], z["meta"], str(z["scoring"])
                # indexes saved before the choice existed scored the decoded inner product
                symmetric = str(z["symmetric"]) if "symmetric" in z.files else "decoded"
        except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt index
            raise IndexFormatError(f"cannot read the BEBR index bytes: {e}") from e
        if int(meta[0]) != quantizer.code_size or codes.ndim != 2 or codes.shape[1] != quantizer.code_size:
            raise IndexFormatError(f"BEBR index codes have {codes.shape[-1]} bytes, the quantizer {quantizer.code_size}")
        index = cls(quantizer, backend, scoring=scoring, candidates=int(meta[1]), exhaustive_limit=int(meta[2]),
                    hnsw_m=int(meta[3]), nlist=int(meta[4]) or None, symmetric=symmetric)
        index.add_codes(codes)
        return index
