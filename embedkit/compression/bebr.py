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
  (``P^T P = I``, kept orthonormal by a QR re-parametrisation), scaled by a learned positive
  ``alpha_t`` per plane. This is what makes symmetric search exact on popcounts: the inner product
  of two decoded codes is ``|mean|^2 + <c, y_q> + <c, y_d> + sum_ts alpha_t alpha_s <b_t, b'_s>``
  with ``c = P^T mean``, and ``<b_t, b'_s> = m - 2 hamming(b_t, b'_s)``. The index stores the
  per-document term ``<c, y_d>`` as one float per document and adds the per-query terms, so its
  symmetric (SDC) score *is* the decoded inner product (see :mod:`embedkit.compression.bebr_index`).
  An MLP psi would reconstruct better but could only be searched by decoding every code.
* **phi_t** is the paper's MLP binarization block: a linear map ``d -> m`` followed by a residual
  block ``z + W2 gelu(W1 LayerNorm(z))`` (hidden width ``m``, ``W2`` zero-initialised, so training
  starts from the linear map). ``residual_mlp=False`` drops the block (phi_t linear). The linear maps
  start from ITQ's PCA + rotation (Gong & Lazebnik) fitted on the same vectors, and P from its
  transpose, so before training the model is exactly ITQ followed by greedy residual sign
  quantization; training starts from a strong baseline. Inputs are centred on the corpus mean
  (stored with the model).
* **Straight-through sign**: forward ``sign`` (0 maps to +1), backward the gradient of
  ``clamp(z, -1, 1)`` (hard-tanh STE).
* **Objective** = ``nce_weight`` * InfoNCE + ``recon_weight`` * reconstruction +
  ``distill_weight`` * neighbour distillation, all on centred vectors:
  (1) InfoNCE (temperature ``temperature``) between the L2-normalised decoded code of each vector
  and the normalised float vectors of its batch and of a FIFO queue of up to ``queue_size`` float
  vectors of earlier batches: the code must pick out its own float vector. An anchor's own vector
  and exact duplicates of it are masked out of its negatives (in the batch and in the queue), as a
  MoCo-style queue excludes the positive by construction, and the queue holds each fitting vector
  at most once (a re-enqueued vector replaces its older copy). Without both, once the queue covers
  the fitting set each anchor meets copies of its own target as negatives and the loss cannot
  fall below ln(copies).
  (2) reconstruction: squared error of the decoded code relative to the mean squared norm.
  (3) distillation (embedkit's addition, not in the paper): for each anchor, its ``n_neighbours``
  nearest fitting vectors by cosine are decoded too; two listwise KL terms (averaged) match the
  softmax (temperature ``distill_temperature``) over those neighbours of the float-float cosines
  with (a) the cosines of the normalised code vectors ``y`` (the symmetric, code-code score) and
  (b) the cosines of the anchor's float vector with the normalised decoded neighbours (the
  asymmetric score). ``distill_weight=0`` gives the paper's two terms.
* **Optimiser**: Adam on every trainable weight (phi's linear maps, the residual block when on,
  P and the alphas), cosine-decayed learning rate, ``epochs`` passes over the fitting vectors in
  seeded random batches; ``torch`` on CPU, deterministic for a given seed and thread count.
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
from embedkit.errors import EmbedkitError, SpecError
from embedkit.validation import check_finite_number, check_positive_int

__all__ = ["BEBRQuantizer"]

logger = logging.getLogger(__name__)


def _build_model(d: int, m: int, u: int, residual_mlp: bool = True):
    import torch
    from torch import nn

    class Phi(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(d, m, bias=True)
            # the residual block's weights exist either way, so saved models load whatever the setting
            self.norm = nn.LayerNorm(m)
            self.fc1 = nn.Linear(m, m)
            self.fc2 = nn.Linear(m, m)

        def forward(self, r):
            z = self.lin(r)
            if not residual_mlp:
                return z
            return z + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(z))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.phi = nn.ModuleList([Phi() for _ in range(u)])
            self.P_raw = nn.Parameter(torch.zeros(d, m))
            self.log_alpha = nn.Parameter(torch.zeros(u))

        def P(self):
            Qm, R = torch.linalg.qr(self.P_raw)
            sign = torch.sign(torch.diagonal(R))
            sign = torch.where(sign == 0, torch.ones_like(sign), sign)
            return Qm * sign

        def forward(self, r, ste: bool = True):
            """(planes (n, u, m) +-1 with STE gradient, decoded centred vectors (n, d), y (n, m))."""
            P = self.P()
            alpha = self.log_alpha.exp()
            planes, y = [], 0.0
            for t, phi in enumerate(self.phi):
                z = phi(r)
                hard = torch.where(z >= 0, 1.0, -1.0)
                b = (z.clamp(-1, 1) + (hard - z.clamp(-1, 1)).detach()) if ste else hard
                planes.append(b)
                y = y + alpha[t] * b
                r = r - alpha[t] * (b @ P.T)
            return torch.stack(planes, 1), y @ P.T, y

    return Model()


class BEBRQuantizer(Quantizer):
    """BEBR recurrent binarization: ``nbits`` planes of ``width`` bits (``nbits*width/8`` bytes).

    Args:
        nbits: number of binary planes ``u`` (bits per output dimension), 1..4.
        width: bits per plane ``m`` (multiple of 8, at most the input dimension); default the
            input dimension.
        epochs: passes over the fitting vectors (0 keeps the ITQ + greedy-residual initialisation).
        batch_size: vectors per training step (>= 2).
        queue_size: float vectors of earlier batches kept as extra InfoNCE negatives (0 = batch only).
        temperature: InfoNCE temperature.
        lr: Adam learning rate (cosine-decayed to 0).
        nce_weight: weight of the InfoNCE term (code vs its own float vector).
        recon_weight: weight of the relative reconstruction error.
        distill_weight: weight of the neighbour distillation (0 = the paper's objective).
        distill_temperature: softmax temperature of the distillation.
        n_neighbours: nearest fitting vectors per anchor that the distillation ranks.
        residual_mlp: phi_t = linear map + residual MLP block (the paper's MLP, default) or the
            linear map alone (False).
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
    renamed_params = {"bits": "nbits", "progress": "show_progress"}

    def __init__(self, nbits: int = 1, width: int | None = None, *, epochs: int = 5, batch_size: int = 256,
                 queue_size: int = 4096, temperature: float = 0.05, lr: float = 1e-4, nce_weight: float = 1.0,
                 recon_weight: float = 1.0, distill_weight: float = 1.0, distill_temperature: float = 0.05,
                 n_neighbours: int = 16, residual_mlp: bool = True, seed: int = 0, n_itq_iter: int = 50,
                 show_progress: bool = True, bits: int | None = None, progress: bool | None = None):
        self.nbits = renamed_keyword(nbits, bits, "bits", "nbits", "BEBRQuantizer")
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.temperature = temperature
        self.lr = lr
        self.nce_weight = nce_weight
        self.recon_weight = recon_weight
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature
        self.n_neighbours = n_neighbours
        self.residual_mlp = residual_mlp
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
        check_positive_int(self.n_neighbours, "bebr n_neighbours")
        check_positive_int(self.seed, "bebr seed", minimum=0)
        check_positive_int(self.n_itq_iter, "bebr n_itq_iter", minimum=0)
        for key in ("temperature", "lr", "distill_temperature"):
            check_finite_number(getattr(self, key), f"bebr {key}", low=0, low_inclusive=False)
        for key in ("nce_weight", "recon_weight", "distill_weight"):
            check_finite_number(getattr(self, key), f"bebr {key}", low=0)
        if not isinstance(self.residual_mlp, (bool, np.bool_)):
            raise EmbedkitError(f"bebr residual_mlp must be True or False, got {self.residual_mlp!r}")
        if n < 2:
            raise EmbedkitError(f"{self.spec} needs at least 2 training vectors, got {n}")

    # -- fitting -----------------------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> None:
        import torch

        from embedkit.compression.itq import ITQQuantizer

        n, d = X.shape
        m = int(self.width or d)
        u = int(self.nbits)
        seed = int(self.seed)
        t0 = time.perf_counter()
        itq = ITQQuantizer(m, n_iter=int(self.n_itq_iter), seed=seed).fit(X)
        mean = itq.mean_
        A = (itq.components_ @ itq.rotation_).T  # (m, d) orthonormal rows
        Xc = torch.from_numpy(X - mean)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        model = _build_model(d, m, u, bool(self.residual_mlp))
        with torch.no_grad():
            At = torch.from_numpy(np.ascontiguousarray(A))
            model.P_raw.copy_(At.T)
            for phi in model.phi:
                phi.lin.weight.copy_(At)
                phi.lin.bias.zero_()
                torch.nn.init.zeros_(phi.fc2.weight)
                torch.nn.init.zeros_(phi.fc2.bias)
            # alpha_t: the mean |coordinate| of the residual plane t sees (greedy residual init)
            r = Xc @ At.T
            alphas = []
            for _ in range(u):
                a = float(r.abs().mean().clamp_min(1e-6))
                alphas.append(a)
                r = r - a * torch.where(r >= 0, 1.0, -1.0)
            model.log_alpha.copy_(torch.log(torch.tensor(alphas)))
        self.nbits_ = u
        self.mean_ = mean.astype(np.float32)
        self.width_ = m
        self.model_ = model
        self.history_: list[dict[str, float]] = []
        if int(self.epochs) > 0:
            # exact duplicates share a group: none is a negative of another
            _, groups = np.unique(X, axis=0, return_inverse=True)
            self._train(Xc, torch.from_numpy(groups.reshape(-1).astype(np.int64)), gen)
        self.model_.eval()
        self.fit_seconds_ = time.perf_counter() - t0

    def _train(self, Xc, groups, gen) -> None:
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        model = self.model_
        n = len(Xc)
        bs = min(int(self.batch_size), n)
        epochs = int(self.epochs)
        queue_size = int(self.queue_size)
        temperature, distill_t = float(self.temperature), float(self.distill_temperature)
        nce_w, rec_w, dist_w = float(self.nce_weight), float(self.recon_weight), float(self.distill_weight)
        steps_per_epoch = max(1, n // bs)
        total = steps_per_epoch * epochs
        unused = () if self.residual_mlp else ("fc1", "fc2", "norm")
        params = [p for name, p in model.named_parameters() if not any(f".{k}." in name for k in unused)]
        opt = torch.optim.Adam(params, lr=float(self.lr))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
        Xn = F.normalize(Xc, dim=1)
        sq_norm = float((Xc**2).sum(1).mean())
        queue = torch.zeros((0, Xc.shape[1]))
        queue_groups = torch.zeros((0,), dtype=torch.int64)
        knn = self._neighbours(Xn) if dist_w > 0 else None
        bar = tqdm(total=total, desc=f"fitting {self.spec}", unit="step", disable=not self.show_progress)
        model.train()
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen)
            sums = np.zeros(3)
            for s in range(steps_per_epoch):
                idx = perm[s * bs : (s + 1) * bs]
                x, xn, g = Xc[idx], Xn[idx], groups[idx]
                _, dec, y = model(x)
                decn = F.normalize(dec, dim=1)
                keys = torch.cat([xn, queue]) if len(queue) else xn
                key_groups = torch.cat([g, queue_groups]) if len(queue) else g
                logits = decn @ keys.T / temperature
                # an anchor's own vector (in the queue from an earlier batch) and its exact duplicates
                # are not negatives; the positive is column i of row i
                same = key_groups[None, :] == g[:, None]
                same[torch.arange(len(idx)), torch.arange(len(idx))] = False
                logits = logits.masked_fill(same, float("-inf"))
                nce = F.cross_entropy(logits, torch.arange(len(idx)))
                rec = ((dec - x) ** 2).sum(1).mean() / sq_norm
                loss = nce_w * nce + rec_w * rec
                dist = torch.zeros(())
                if dist_w > 0:
                    # listwise distillation over each anchor's nearest fitting vectors: the ranking
                    # of code-code (SDC) and float-code (ADC) cosines must follow float-float
                    nb = knn[idx]  # (b, K)
                    _, dec_nb, y_nb = model(Xc[nb.reshape(-1)])
                    K = nb.shape[1]
                    yn = F.normalize(y, dim=1)
                    yn_nb = F.normalize(y_nb, dim=1).reshape(len(idx), K, -1)
                    dec_nb = F.normalize(dec_nb, dim=1).reshape(len(idx), K, -1)
                    teacher = torch.einsum("bd,bkd->bk", xn, Xn[nb]) / distill_t
                    sdc = torch.einsum("bm,bkm->bk", yn, yn_nb) / distill_t
                    adc = torch.einsum("bd,bkd->bk", xn, dec_nb) / distill_t
                    lt = F.log_softmax(teacher, 1)
                    dist = 0.5 * (F.kl_div(F.log_softmax(sdc, 1), lt, log_target=True, reduction="batchmean")
                                  + F.kl_div(F.log_softmax(adc, 1), lt, log_target=True, reduction="batchmean"))
                    loss = loss + dist_w * dist
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if queue_size > 0:
                    # newest first; a vector re-enqueued in a later epoch replaces its older copy, so
                    # the queue holds each vector (and each set of duplicates) at most once
                    keep = ~torch.isin(queue_groups, g)
                    queue = torch.cat([xn.detach(), queue[keep]])[:queue_size]
                    queue_groups = torch.cat([g, queue_groups[keep]])[:queue_size]
                sums += [nce.item(), rec.item(), dist.item()]
                bar.update(1)
            avg = sums / steps_per_epoch
            self.history_.append({"epoch": epoch + 1, "infonce": float(avg[0]), "recon": float(avg[1]), "distill": float(avg[2])})
            bar.set_postfix(nce=f"{avg[0]:.3f}", rec=f"{avg[1]:.3f}")
            logger.debug("%s epoch %d: infonce %.4f recon %.4f distill %.4f", self.spec, epoch + 1, *avg)
        bar.close()

    def _neighbours(self, Xn):
        """Indices (n, K) of each fitting vector's K nearest others by cosine (K = ``n_neighbours``)."""
        import torch

        K = min(int(self.n_neighbours), len(Xn) - 1)
        out = []
        with torch.no_grad():
            for i in range(0, len(Xn), 2048):
                sim = Xn[i : i + 2048] @ Xn.T
                sim[torch.arange(len(sim)), torch.arange(i, i + len(sim))] = -2.0
                out.append(sim.topk(K, dim=1).indices)
        return torch.cat(out)

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
                  candidates: int = 10) -> BEBRIndex:
        """An empty :class:`~embedkit.compression.bebr_index.BEBRIndex` (``scoring`` sdc or adc).

        ``nlist`` (backend ``ivf``) is checked against ``train_X`` when given; the index trains its
        IVF lists on the first plane of the codes it holds at the first search.
        """
        self._check_fitted()
        check_backend(backend)
        if backend == "ivf" and nlist is not None:
            from embedkit.compression.base import check_nlist

            check_nlist(nlist, len(train_X) if train_X is not None else nlist)
        return BEBRIndex(self, backend, scoring=scoring, candidates=candidates, hnsw_m=hnsw_m, nlist=nlist)

    def index_from_bytes(self, data: bytes, backend: str) -> BEBRIndex:
        self._check_fitted()
        return BEBRIndex.from_bytes(self, data, backend)

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = super().state()
        config["width_"] = self.width_
        config["nbits_"] = self.nbits_
        config["history"] = self.history_
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
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        model = _build_model(int(self.dim_in_), self.width_, self.nbits_, bool(self.residual_mlp))
        weights = {k[2:]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items() if k.startswith("w.")}
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise EmbedkitError(f"{self.spec}: saved weights do not match the model ({e})") from e
        model.eval()
        self.model_ = model
