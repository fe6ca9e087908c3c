"""``bebr:NBITS[xWIDTH]``: recurrent binarization (BEBR, Gan et al., KDD 2023, arXiv 2302.08714).

BEBR ("Binary Embedding-based Retrieval at Tencent") compresses *already computed* float
embeddings into ``u = NBITS`` binary planes of ``m = WIDTH`` bits each (``u*m/8`` bytes per vector),
trained embedding-to-embedding: only the float vectors of a corpus, no labels and no text.

The recurrence, for ``t = 0 .. u-1`` with ``r_{-1} = x - mean``::

    b_t = sign(phi_t(r_{t-1}))          straight-through sign
    f_t = psi_t(b_t) = alpha_t * P b_t   reconstruction of what plane t captured
    r_t = r_{t-1} - f_t                  the residual the next plane binarizes

and a code decodes to ``mean + P y`` with ``y = sum_t alpha_t b_t``.

What the paper leaves open, and what embedkit chose (the paper has no public code):

* **Reconstruction psi_t is linear and shares one matrix P with orthonormal columns**
  (``P^T P = I``, kept orthonormal by a QR re-parametrisation), scaled by a positive ``alpha_t`` per
  plane. This is what makes symmetric search run on popcounts: ``<P y_q, P y_d> = <y_q, y_d> =
  sum_ts alpha_t alpha_s (m - 2 hamming(b_t, b'_s))``. An MLP psi would reconstruct better but could
  only be searched by decoding every code.
* **The symmetric (SDC) score** (``symmetric``): ``"centred"`` (default) scores ``<y_q, y_d>``, nothing
  stored beside the code, and with one plane it is a plain Hamming search (FAISS ``IndexBinaryFlat``);
  ``"decoded"`` scores the inner product of the decoded vectors, adding ``<P^T mean, y_d>`` (one stored
  float per document) and the per-query terms. Chosen by measurement on two collections
  (``bench/bebr.py``); either can be set per index (``new_index(symmetric=...)``).
* **phi_t** is the paper's MLP binarization block: a linear map ``d -> m`` followed by a residual
  block ``z + W2 gelu(W1 LayerNorm(z))`` (hidden width ``m``, ``W2`` zero-initialised). ``residual_mlp=False``
  drops the block. The linear maps start from ITQ's PCA + rotation (Gong & Lazebnik) fitted on the
  same vectors, divided by ``alpha_t`` so that ``|z| ~ 1``, and P from its transpose: before training
  the model is exactly ITQ followed by greedy residual sign quantization (``epochs=0``).
* **Straight-through sign** for the ranking terms: forward ``sign``, backward the gradient of
  ``clamp(z, -1, 1)`` — with ``z`` in units of ``alpha_t`` this passes gradients near the decision
  boundary only. (Round 2 used raw ``z`` of size ~0.03, so the clamp never bit and the residual block's
  first Adam steps swamped ``z``.)
* **Objective** (details and reasons in :mod:`embedkit.compression.bebr_train`) =
  ``recon_weight`` * reconstruction + ``distill_weight`` * distillation + ``nce_weight`` * InfoNCE
  [+ ``pair_weight`` * query-document InfoNCE when ``fit(X, pairs=...)`` gets pairs]:
  (1) reconstruction (paper): squared error of the decoded *hard* codes relative to the mean squared
  norm, the codes detached, so it fits ``P`` and ``alpha`` and cannot flip a bit; after every epoch
  ``P`` and ``alpha`` are also refitted in closed form to the current codes (Procrustes + least squares).
  (2) distillation (embedkit's, not in the paper): over each vector's ``n_neighbours`` nearest fitting
  vectors, listwise KL between the softmax (``distill_temperature``) of float cosines and that of the
  code-code cosines (the SDC order) and of float-code cosines (the ADC order).
  (3) InfoNCE (paper; off by default, ``nce_weight=0``): a float vector must pick out its own decoded
  code (the ADC score) among the batch's codes and its ``hard_negatives`` highest-scoring codes from a
  queue of earlier batches (the paper's queue-based hard-negative mining); an anchor's own code and its
  exact duplicates are never its negatives. Off because it lowered held-out agreement with float search
  on unlabelled sentences (2 planes: ADC recall@10 0.814 -> 0.765 after one epoch; measured with
  held-out sentences, not SciFact).
* **Selection** (embedkit's): ``validation_fraction`` of the fitting vectors (at most 2,000) is held out;
  after every epoch the recall@10 of SDC and ADC search against exact float search is measured there;
  with pairs, the same share of pairs is held out and *their* recall@10 (SDC and ADC) decides instead
  (the task's own measure, as the issue's "nDCG when query-document pairs are given"; agreement is
  still recorded); the best epoch whose every deciding measure is at least the start's is kept, the
  ITQ start when none is (``selection_`` records the scores and ``chosen_epoch``,
  saved with the codec), and training stops after ``n_iter_no_change`` epochs without a better one.
* **Optimiser**: Adam on every trainable weight, cosine-decayed learning rate ``lr``, at most
  ``epochs`` passes in seeded random batches; ``torch`` on CPU, deterministic for a seed and thread count.
* ``WIDTH`` must be a multiple of 8 and at most the input dimension (``P`` needs ``m <= d``
  orthonormal columns); the default is the input dimension, giving ``NBITS`` bits per dimension.

Searching: :meth:`BEBRQuantizer.new_index` returns a
:class:`~embedkit.compression.bebr_index.BEBRIndex` (SDC by default, ``scoring="adc"`` for float
queries against decoded codes).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from embedkit.compression.base import Quantizer, check_backend, renamed_keyword
from embedkit.compression.bebr_index import BEBRIndex
from embedkit.compression.bebr_train import build_model, init_from_itq, split_holdout, train
from embedkit.errors import EmbedkitError, SpecError
from embedkit.validation import check_finite_number, check_positive_int

__all__ = ["BEBRQuantizer"]

logger = logging.getLogger(__name__)


class BEBRQuantizer(Quantizer):
    """BEBR recurrent binarization: ``nbits`` planes of ``width`` bits (``nbits*width/8`` bytes).

    Args:
        nbits: number of binary planes ``u`` (bits per output dimension), 1..4.
        width: bits per plane ``m`` (multiple of 8, at most the input dimension); default the
            input dimension.
        epochs: most passes over the fitting vectors (0 keeps the ITQ + greedy-residual initialisation);
            training stops earlier after ``n_iter_no_change`` epochs without a better held-out score.
        batch_size: vectors per training step (>= 2).
        queue_size: decoded codes of earlier batches kept for the InfoNCE's hard negatives (0 = batch only).
        hard_negatives: highest-scoring queued codes each anchor keeps as negatives (0 = the whole queue).
        temperature: InfoNCE temperature.
        lr: Adam learning rate (cosine-decayed to 0).
        nce_weight: weight of the InfoNCE term (code vs its own float vector).
        recon_weight: weight of the relative reconstruction error.
        distill_weight: weight of the neighbour distillation (0 = the paper's objective).
        distill_temperature: softmax temperature of the distillation.
        pair_weight: weight of the query-document InfoNCE when ``fit(X, pairs=...)`` gets pairs.
        n_neighbours: nearest fitting vectors per anchor that the distillation ranks.
        residual_mlp: phi_t = linear map + residual MLP block (the paper's MLP, default) or the
            linear map alone (False).
        symmetric: the SDC score: ``"centred"`` (``<y_q, y_d>``, popcounts only; default) or
            ``"decoded"`` (the decoded inner product, one stored float per document).
        validation_fraction: share of the fitting vectors held out to choose the epoch (at most 2,000
            vectors; none below 100 fitting vectors); 0 keeps the last epoch, unchecked.
        n_iter_no_change: epochs without a better held-out score before training stops.
        seed: seeds batches, weights and the initial rotation; the same seed gives the same codes.
        n_itq_iter: ITQ iterations of the initial rotation.
        show_progress: show a progress bar while fitting.

    ``bits=`` and ``progress=`` are deprecated aliases of ``nbits`` and ``show_progress``.

    Example:
        >>> import numpy as np
        >>> q = BEBRQuantizer(2, epochs=1, show_progress=False).fit(np.random.randn(300, 64))
        >>> q.encode(np.random.randn(3, 64)).shape  # 2 planes x 64 bits
        (3, 16)
    """

    name = "bebr"
    accepts_pairs = True
    renamed_params = {"bits": "nbits", "progress": "show_progress"}

    def __init__(self, nbits: int = 1, width: int | None = None, *, epochs: int = 5, batch_size: int = 256,
                 queue_size: int = 4096, hard_negatives: int = 64, temperature: float = 0.05, lr: float = 3e-4,
                 nce_weight: float = 0.0, recon_weight: float = 1.0, distill_weight: float = 1.0,
                 distill_temperature: float = 0.05, pair_weight: float = 1.0, n_neighbours: int = 16,
                 residual_mlp: bool = True,
                 symmetric: str = "centred", validation_fraction: float = 0.1, n_iter_no_change: int = 2,
                 seed: int = 0, n_itq_iter: int = 50,
                 show_progress: bool = True, bits: int | None = None, progress: bool | None = None):
        self.nbits = renamed_keyword(nbits, bits, "bits", "nbits", "BEBRQuantizer")
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.hard_negatives = hard_negatives
        self.temperature = temperature
        self.lr = lr
        self.nce_weight = nce_weight
        self.recon_weight = recon_weight
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature
        self.pair_weight = pair_weight
        self.n_neighbours = n_neighbours
        self.residual_mlp = residual_mlp
        self.symmetric = symmetric
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.seed = seed
        self.n_itq_iter = n_itq_iter
        self.show_progress = renamed_keyword(show_progress, progress, "progress", "show_progress", "BEBRQuantizer")

    @property
    def spec(self) -> str:
        return f"bebr:{self.nbits}" if self.width is None else f"bebr:{self.nbits}x{self.width}"

    @property
    def code_size(self) -> int:
        self._check_fitted()
        return self.nbits_ * self.width_ // 8

    def _validate(self, n: int, d: int) -> None:
        nbits = check_positive_int(self.nbits, "bebr nbits (binary planes)", maximum=4)
        if self.width is not None:
            m = check_positive_int(self.width, "bebr width (bits per plane)", minimum=8)
            if m % 8:
                raise SpecError(f"{self.spec}: plane width {m} must be a positive multiple of 8; "
                                f"pass bebr:{nbits}x{m - m % 8}")
        else:
            m = d
            if m % 8:
                raise SpecError(f"{self.spec}: plane width {m} (the input dimension) must be a multiple of 8; "
                                f"pass bebr:{nbits}x{m - m % 8 or 8}")
        if m > d:
            raise SpecError(f"{self.spec}: plane width {m} exceeds the input dimension {d}; use at most bebr:{nbits}x{d - d % 8}")
        check_positive_int(self.epochs, "bebr epochs", minimum=0)
        check_positive_int(self.batch_size, "bebr batch_size", minimum=2)
        check_positive_int(self.queue_size, "bebr queue_size", minimum=0)
        check_positive_int(self.hard_negatives, "bebr hard_negatives", minimum=0)
        check_positive_int(self.n_iter_no_change, "bebr n_iter_no_change")
        check_finite_number(self.validation_fraction, "bebr validation_fraction", low=0, high=0.5)
        if self.symmetric not in ("centred", "decoded"):
            raise EmbedkitError(f"bebr symmetric must be 'centred' or 'decoded', got {self.symmetric!r}")
        check_positive_int(self.n_neighbours, "bebr n_neighbours")
        check_positive_int(self.seed, "bebr seed", minimum=0)
        check_positive_int(self.n_itq_iter, "bebr n_itq_iter", minimum=0)
        for key in ("temperature", "lr", "distill_temperature"):
            check_finite_number(getattr(self, key), f"bebr {key}", low=0, low_inclusive=False)
        for key in ("nce_weight", "recon_weight", "distill_weight", "pair_weight"):
            check_finite_number(getattr(self, key), f"bebr {key}", low=0)
        if not isinstance(self.residual_mlp, (bool, np.bool_)):
            raise EmbedkitError(f"bebr residual_mlp must be True or False, got {self.residual_mlp!r}")
        if n < 2:
            raise EmbedkitError(f"{self.spec} needs at least 2 training vectors, got {n}")

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X, pairs=None) -> BEBRQuantizer:
        """Learn the codec from ``X``; ``pairs = (Q, D)``: vectors of queries and their relevant documents.

        Pairs add a query-document InfoNCE (``pair_weight``): in each step a batch of pairs, every query
        scored against the batch's document codes as search scores them (ADC: float query, decoded
        document; SDC: both binarized, the code-code cosine), the relevant document the positive and the
        other documents of the batch the negatives. Without pairs training is embedding-to-embedding, as
        in the paper.
        """
        from embedkit.compression.base import check_matrix

        self._pairs = None
        if pairs is not None:
            X0 = check_matrix(X)
            if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
                raise EmbedkitError(f"{self.spec}: pairs must be (query_vectors, document_vectors)")
            Qp = check_matrix(pairs[0], X0.shape[1], "pair queries")
            Dp = check_matrix(pairs[1], X0.shape[1], "pair documents")
            if len(Qp) != len(Dp) or len(Qp) < 2:
                raise EmbedkitError(f"{self.spec}: pairs need as many query as document vectors, at least 2 "
                                    f"(got {len(Qp)} and {len(Dp)})")
            self._pairs = (Qp, Dp)
        try:
            return super().fit(X)
        finally:
            self._pairs = None

    def _fit(self, X: np.ndarray) -> None:
        import torch

        from embedkit.compression.itq import ITQQuantizer

        n, d = X.shape
        m = int(self.width or d)
        u = int(self.nbits)
        seed = int(self.seed)
        t0 = time.perf_counter()
        train_rows, held = (split_holdout(n, seed, float(self.validation_fraction)) if int(self.epochs) > 0
                            else (np.arange(n), np.zeros(0, np.int64)))
        # the initialisation sees every vector, so a fit that falls back to it equals epochs=0 exactly
        itq = ITQQuantizer(m, n_iter=int(self.n_itq_iter), seed=seed).fit(X)
        mean = itq.mean_
        A = (itq.components_ @ itq.rotation_).T  # (m, d) orthonormal rows
        Xc = torch.from_numpy(X - mean)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = build_model(d, m, u, bool(self.residual_mlp))
        init_from_itq(model, Xc, A)
        model.eval()
        self.nbits_ = u
        self.mean_ = mean.astype(np.float32)
        self.width_ = m
        self.model_ = model
        self.dim_in_ = d  # the held-out selection searches with the model being trained
        self.history_: list[dict[str, float]] = []
        self.selection_: dict = {"chosen_epoch": 0, "epochs": []}
        if int(self.epochs) > 0:
            # exact duplicates share a group: none is a negative of another
            _, groups = np.unique(X, axis=0, return_inverse=True)
            corpus = train_rows
            if len(corpus) > 20_000:
                corpus = np.sort(np.random.default_rng(seed).choice(corpus, 20_000, replace=False))
            train(self, X, Xc, torch.from_numpy(groups.reshape(-1).astype(np.int64)), gen,
                  holdout=(held, corpus) if len(held) else None, pairs=getattr(self, "_pairs", None))
        self.model_.eval()
        self.fit_seconds_ = time.perf_counter() - t0

    # -- coding ------------------------------------------------------------------------------
    def _planes(self, X: np.ndarray) -> np.ndarray:
        """``(n, u, m)`` bool planes (True = +1) of validated input vectors."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(X), 8192):
                planes, _, _ = self.model_(torch.from_numpy(X[i : i + 8192] - self.mean_), ste=False)
                out.append(planes.numpy() > 0)
        return np.concatenate(out) if out else np.zeros((0, self.nbits_, self.width_), dtype=bool)

    def encode(self, X) -> np.ndarray:
        """``(n, bits*width/8)`` uint8: the planes packed (``np.packbits``) and concatenated."""
        X = self._check_input(X)
        planes = self._planes(X)
        return np.packbits(planes.reshape(len(X), -1), axis=1)

    def _check_codes(self, codes) -> np.ndarray:
        self._check_fitted()
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] != self.code_size:
            raise EmbedkitError(f"{self.spec} codes must have shape (n, {self.code_size}), got {codes.shape}")
        return codes

    def alphas(self) -> np.ndarray:
        """Per-plane scales ``alpha_t`` (float64)."""
        self._check_fitted()
        return np.exp(self.model_.log_alpha.detach().numpy().astype(np.float64))

    def plane_weights(self) -> np.ndarray:
        """``(u, u)`` weights ``alpha_t alpha_s`` of the per-plane-pair inner products."""
        a = self.alphas()
        return np.outer(a, a)

    def projection(self) -> np.ndarray:
        """``P`` (d, m) with orthonormal columns: decoded = mean + P y."""
        import torch

        self._check_fitted()
        with torch.no_grad():
            return self.model_.P().numpy().astype(np.float32)

    def code_vectors(self, codes) -> np.ndarray:
        """``y = sum_t alpha_t b_t`` (n, m): the codes in their own m-dimensional space."""
        from embedkit.compression.bebr_index import unpack_planes

        codes = self._check_codes(codes)
        planes = unpack_planes(codes, self.nbits_, self.width_)
        return np.einsum("t,ntm->nm", self.alphas().astype(np.float32), planes)

    def decode(self, codes) -> np.ndarray:
        """Float vectors ``mean + P y`` (n, dim) of codes."""
        return self.mean_ + self.code_vectors(codes) @ self.projection().T

    def code_offsets(self, codes) -> np.ndarray:
        """``<P^T mean, y>`` per code (n,) float32: the per-document term of the decoded inner product.

        ``<mean + P y_q, mean + P y_d> = |mean|^2 + <c, y_q> + <c, y_d> + <y_q, y_d>`` with
        ``c = P^T mean``; :class:`~embedkit.compression.bebr_index.BEBRIndex` stores this term as one
        float per document so that its popcount (SDC) score is the decoded inner product.
        """
        c = self.projection().T.astype(np.float64) @ self.mean_.astype(np.float64)
        return (self.code_vectors(codes).astype(np.float64) @ c).astype(np.float32)

    def mean_norm2(self) -> float:
        """``|mean|^2``, the constant term of the decoded inner product."""
        self._check_fitted()
        return float(np.dot(self.mean_.astype(np.float64), self.mean_.astype(np.float64)))

    def asymmetric_scores(self, Q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``<q, decode(code)>`` for float queries (already validated) and all codes."""
        qp = Q @ self.projection()
        return (qp @ self.code_vectors(codes).T + (Q @ self.mean_)[:, None]).astype(np.float32)

    # -- search ------------------------------------------------------------------------------
    def new_index(self, backend="flat", *, nlist=None, hnsw_m=32, train_X=None, scoring: str = "sdc",
                  candidates: int = 10, symmetric: str | None = None) -> BEBRIndex:
        """An empty :class:`~embedkit.compression.bebr_index.BEBRIndex` (``scoring`` sdc or adc).

        ``nlist`` (backend ``ivf``) is checked against ``train_X`` when given; the index trains its
        IVF lists on the first plane of the codes it holds at the first search.
        """
        self._check_fitted()
        check_backend(backend)
        if backend == "ivf" and nlist is not None:
            from embedkit.compression.base import check_nlist

            check_nlist(nlist, len(train_X) if train_X is not None else nlist)
        return BEBRIndex(self, backend, scoring=scoring, candidates=candidates, hnsw_m=hnsw_m, nlist=nlist,
                         symmetric=symmetric)

    def index_from_bytes(self, data: bytes, backend: str) -> BEBRIndex:
        self._check_fitted()
        return BEBRIndex.from_bytes(self, data, backend)

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = super().state()
        config["width_"] = self.width_
        config["nbits_"] = self.nbits_
        config["history"] = self.history_
        config["selection"] = self.selection_
        arrays["mean"] = self.mean_
        for k, v in self.model_.state_dict().items():
            arrays[f"w.{k}"] = v.detach().numpy().copy()
        return config, arrays

    def set_state(self, config, arrays) -> None:
        import torch

        super().set_state(config, arrays)
        self.width_ = int(config["width_"])
        self.nbits_ = int(config.get("nbits_", self.nbits))
        self.history_ = list(config.get("history", []))
        self.selection_ = dict(config.get("selection") or {})
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        model = build_model(int(self.dim_in_), self.width_, self.nbits_, bool(self.residual_mlp))
        weights = {k[2:]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items() if k.startswith("w.")}
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise EmbedkitError(f"{self.spec}: saved weights do not match the model ({e})") from e
        model.eval()
        self.model_ = model
