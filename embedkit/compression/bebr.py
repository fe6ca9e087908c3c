"""``bebr:BITS[xWIDTH]``: recurrent binarization (BEBR, Gan et al., KDD 2023, arXiv 2302.08714).

BEBR ("Binary Embedding-based Retrieval at Tencent") compresses *already computed* float
embeddings into ``u = BITS`` binary planes of ``m = WIDTH`` bits each (``u*m/8`` bytes per vector),
trained embedding-to-embedding: only the float vectors of a corpus, no labels and no text.

The recurrence, for ``t = 0 .. u-1`` with ``r_{-1} = x - mean``::

    b_t = sign(phi_t(r_{t-1}))          phi_t: linear d->m + residual MLP block, straight-through sign
    f_t = psi_t(b_t) = alpha_t * P b_t   reconstruction of what plane t captured
    r_t = r_{t-1} - f_t                  the residual the next plane binarizes

and a code decodes to ``mean + P sum_t alpha_t b_t``.

What the paper leaves open, and what embedkit chose (the paper has no public code):

* **Reconstruction psi_t is linear and shares one matrix P with orthonormal columns**
  (``P^T P = I``, kept orthonormal by a QR re-parametrisation), scaled by a learned positive
  ``alpha_t`` per plane. This is what makes symmetric search exact on popcounts: the inner product
  of two decoded (centred) codes is ``sum_ts alpha_t alpha_s <b_t, b'_s> = sum_ts alpha_t alpha_s
  (m - 2 hamming(b_t, b'_s))`` (see :mod:`embedkit.compression.bebr_index`). An MLP psi would
  reconstruct better but could only be searched by decoding every code.
* **phi_t** = a linear map ``d -> m`` followed by a residual block ``z + W2 gelu(W1 LayerNorm(z))``
  (hidden width ``m``, ``W2`` zero-initialised). The linear maps start from ITQ's PCA + rotation
  (Gong & Lazebnik) fitted on the same vectors, and P from its transpose, so before training
  the model is exactly ITQ followed by greedy residual sign quantization; training can only
  start from a strong baseline. Inputs are centred on the corpus mean (stored with the model).
* **Straight-through sign**: forward ``sign`` (0 maps to +1), backward the gradient of
  ``clamp(z, -1, 1)`` (hard-tanh STE).
* **Objective** = InfoNCE + reconstruction + similarity distillation:
  (1) InfoNCE (temperature ``temperature``) between the decoded code of each vector and the float
  vectors of the batch and of a FIFO queue of ``queue_size`` earlier float vectors: the code must
  pick out its own float vector; (2) relative squared reconstruction error of the decoded code;
  (3) a KL term matching the softmax over the batch of code-code similarities to that of
  float-float similarities (``distill_weight``), because symmetric search compares codes with codes.
  Term (3) is embedkit's addition; set ``distill_weight=0`` for the paper's two terms.
* **Optimiser**: Adam, cosine-decayed learning rate, ``epochs`` passes over the fitting vectors
  in seeded random batches; ``torch`` on CPU, deterministic for a given seed and thread count.
* ``WIDTH`` must be a multiple of 8 and at most the input dimension (``P`` needs ``m <= d``
  orthonormal columns); the default is the input dimension, giving ``BITS`` bits per dimension.

Searching: :meth:`BEBRQuantizer.new_index` returns a
:class:`~embedkit.compression.bebr_index.BEBRIndex` (SDC by default, ``scoring="adc"`` for float
queries against decoded codes).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from embedkit.compression.base import Quantizer, _check_backend
from embedkit.compression.bebr_index import BEBRIndex
from embedkit.errors import EmbedkitError

_HPARAMS = ("epochs", "batch_size", "queue_size", "temperature", "lr", "nce_weight", "recon_weight", "distill_weight",
            "distill_temperature", "n_neighbours", "residual_mlp", "seed", "n_itq_iter")


def _build_model(d: int, m: int, u: int):
    import torch
    from torch import nn

    class Phi(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(d, m, bias=True)
            self.norm = nn.LayerNorm(m)
            self.fc1 = nn.Linear(m, m)
            self.fc2 = nn.Linear(m, m)

        def forward(self, r):
            z = self.lin(r)
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
    """BEBR recurrent binarization: ``bits`` planes of ``width`` bits (``bits*width/8`` bytes).

    Args:
        bits: number of binary planes ``u`` (bits per output dimension), 1..4.
        width: bits per plane ``m`` (multiple of 8, at most the input dimension); default the
            input dimension.
        epochs, batch_size, queue_size, temperature, lr, recon_weight, distill_weight,
        distill_temperature: training hyperparameters (see the module docstring).
        seed: seeds batches and initial rotation; the same seed gives the same codes.
        n_itq_iter: ITQ iterations for the initial rotation.
        progress: show a progress bar while fitting.

    Example:
        >>> q = BEBRQuantizer(2, epochs=1, progress=False).fit(np.random.randn(300, 64))
        >>> q.encode(np.random.randn(3, 64)).shape  # 2 planes x 64 bits
        (3, 16)
    """

    name = "bebr"

    def __init__(self, bits: int = 1, width: int | None = None, *, epochs: int = 5, batch_size: int = 256,
                 queue_size: int = 4096, temperature: float = 0.05, lr: float = 1e-4, nce_weight: float = 1.0, recon_weight: float = 1.0,
                 distill_weight: float = 1.0, distill_temperature: float = 0.05, n_neighbours: int = 16, residual_mlp: bool = False, seed: int = 0,
                 n_itq_iter: int = 50, progress: bool = True):
        if not 1 <= int(bits) <= 4:
            raise EmbedkitError(f"bebr bits per dimension must be 1..4, got {bits}")
        if width is not None and (int(width) < 8 or int(width) % 8):
            raise EmbedkitError(f"bebr width must be a positive multiple of 8, got {width}")
        if int(epochs) < 0 or int(batch_size) < 2:
            raise EmbedkitError(f"bebr needs epochs >= 0 and batch_size >= 2, got {epochs}, {batch_size}")
        self.bits = int(bits)
        self.width = None if width is None else int(width)
        self.epochs, self.batch_size, self.queue_size = int(epochs), int(batch_size), int(queue_size)
        self.temperature, self.lr = float(temperature), float(lr)
        self.nce_weight = float(nce_weight)
        self.recon_weight, self.distill_weight = float(recon_weight), float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        self.n_neighbours = int(n_neighbours)
        self.residual_mlp = bool(residual_mlp)
        self.seed, self.n_itq_iter = int(seed), int(n_itq_iter)
        self.progress = bool(progress)
        self.history_: list[dict[str, float]] = []

    @property
    def spec(self) -> str:
        return f"bebr:{self.bits}" if self.width is None else f"bebr:{self.bits}x{self.width}"

    @property
    def code_size(self) -> int:
        self._check_fitted()
        return self.bits * self.width_ // 8

    # -- fitting -----------------------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> None:
        import torch

        n, d = X.shape
        m = self.width or d
        if m % 8:
            raise EmbedkitError(f"{self.spec}: plane width {m} must be a multiple of 8; pass bebr:{self.bits}x{m - m % 8 or 8}")
        if m > d:
            raise EmbedkitError(f"{self.spec}: plane width {m} exceeds the input dimension {d}")
        if n < 2:
            raise EmbedkitError(f"{self.spec} needs at least 2 training vectors, got {n}")
        from embedkit.compression.itq import ITQQuantizer

        t0 = time.perf_counter()
        itq = ITQQuantizer(m, n_iter=self.n_itq_iter, seed=self.seed).fit(X)
        mean = itq.mean_
        A = (itq.components_ @ itq.rotation_).T  # (m, d) orthonormal rows
        Xc = torch.from_numpy(X - mean)
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        model = _build_model(d, m, self.bits)
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
            for _ in range(self.bits):
                a = float(r.abs().mean().clamp_min(1e-6))
                alphas.append(a)
                r = r - a * torch.where(r >= 0, 1.0, -1.0)
            model.log_alpha.copy_(torch.log(torch.tensor(alphas)))
        self.mean_ = mean.astype(np.float32)
        self.width_ = m
        self.model_ = model
        if self.epochs > 0:
            self._train(Xc, gen)
        self.model_.eval()
        self.fit_seconds_ = time.perf_counter() - t0

    def _train(self, Xc, gen) -> None:
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        model = self.model_
        n = len(Xc)
        bs = min(self.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        total = steps_per_epoch * self.epochs
        params = [p for name, p in model.named_parameters() if self.residual_mlp or not any(f".{k}." in name for k in ("fc1", "fc2", "norm"))]
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
        Xn = F.normalize(Xc, dim=1)
        sq_norm = float((Xc**2).sum(1).mean())
        queue = torch.zeros((0, Xc.shape[1]))
        knn = self._neighbours(Xn) if self.distill_weight > 0 else None
        self.history_ = []
        bar = tqdm(total=total, desc=f"fitting {self.spec}", unit="step", disable=not self.progress)
        model.train()
        for epoch in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            sums = np.zeros(3)
            for s in range(steps_per_epoch):
                idx = perm[s * bs : (s + 1) * bs]
                x, xn = Xc[idx], Xn[idx]
                _, dec, y = model(x)
                decn = F.normalize(dec, dim=1)
                keys = torch.cat([xn, queue]) if len(queue) else xn
                logits = decn @ keys.T / self.temperature
                nce = F.cross_entropy(logits, torch.arange(len(idx)))
                rec = ((dec - x) ** 2).sum(1).mean() / sq_norm
                loss = self.nce_weight * nce + self.recon_weight * rec
                dist = torch.zeros(())
                if self.distill_weight > 0:
                    # listwise distillation over each anchor's nearest corpus neighbours: the ranking
                    # of code-code (SDC) and float-code (ADC) similarities must follow float-float
                    nb = knn[idx]  # (b, K)
                    _, dec_nb, y_nb = model(Xc[nb.reshape(-1)])
                    K = nb.shape[1]
                    yn = F.normalize(y, dim=1)
                    yn_nb = F.normalize(y_nb, dim=1).reshape(len(idx), K, -1)
                    dec_nb = F.normalize(dec_nb, dim=1).reshape(len(idx), K, -1)
                    teacher = torch.einsum("bd,bkd->bk", xn, Xn[nb]) / self.distill_temperature
                    sdc = torch.einsum("bm,bkm->bk", yn, yn_nb) / self.distill_temperature
                    adc = torch.einsum("bd,bkd->bk", xn, dec_nb) / self.distill_temperature
                    lt = F.log_softmax(teacher, 1)
                    dist = 0.5 * (F.kl_div(F.log_softmax(sdc, 1), lt, log_target=True, reduction="batchmean")
                                  + F.kl_div(F.log_softmax(adc, 1), lt, log_target=True, reduction="batchmean"))
                    loss = loss + self.distill_weight * dist
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if self.queue_size > 0:
                    queue = torch.cat([xn.detach(), queue])[: self.queue_size]
                sums += [nce.item(), rec.item(), dist.item()]
                bar.update(1)
            avg = sums / steps_per_epoch
            self.history_.append({"epoch": epoch + 1, "infonce": float(avg[0]), "recon": float(avg[1]), "distill": float(avg[2])})
            bar.set_postfix(nce=f"{avg[0]:.3f}", rec=f"{avg[1]:.3f}")
        bar.close()

    def _neighbours(self, Xn):
        """Indices (n, K) of each fitting vector's K nearest others by cosine (K = ``n_neighbours``)."""
        import torch

        K = min(self.n_neighbours, len(Xn) - 1)
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
        return np.concatenate(out) if out else np.zeros((0, self.bits, self.width_), dtype=bool)

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
        planes = unpack_planes(codes, self.bits, self.width_)
        return np.einsum("t,ntm->nm", self.alphas().astype(np.float32), planes)

    def decode(self, codes) -> np.ndarray:
        """Float vectors ``mean + P y`` (n, dim) of codes."""
        return self.mean_ + self.code_vectors(codes) @ self.projection().T

    def asymmetric_scores(self, Q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``<q, decode(code)>`` for float queries (already validated) and all codes."""
        qp = Q @ self.projection()
        return (qp @ self.code_vectors(codes).T + (Q @ self.mean_)[:, None]).astype(np.float32)

    # -- search ------------------------------------------------------------------------------
    def new_index(self, backend="flat", *, nlist=None, hnsw_m=32, train_X=None, scoring: str = "sdc",
                  candidates: int = 10) -> BEBRIndex:
        """An empty :class:`~embedkit.compression.bebr_index.BEBRIndex` (``scoring`` sdc or adc)."""
        self._check_fitted()
        return BEBRIndex(self, _check_backend(backend), scoring=scoring, candidates=candidates, hnsw_m=hnsw_m, nlist=nlist)

    def index_from_bytes(self, data: bytes, backend: str) -> BEBRIndex:
        self._check_fitted()
        return BEBRIndex.from_bytes(self, data, backend)

    # -- persistence -------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = super().state()
        config.update({k: getattr(self, k) for k in _HPARAMS})
        config["bits"], config["width"] = self.bits, self.width
        if self.is_fitted:
            config["width_"] = self.width_
            config["history"] = self.history_
            arrays["mean"] = self.mean_
            for k, v in self.model_.state_dict().items():
                arrays[f"w.{k}"] = v.detach().numpy().copy()
        return config, arrays

    def _set_state(self, config, arrays) -> None:
        import torch

        super()._set_state(config, arrays)
        for k in _HPARAMS:
            if k in config:
                setattr(self, k, type(getattr(self, k))(config[k]))
        if self.dim_in_ is None:
            return
        self.width_ = int(config["width_"])
        self.history_ = list(config.get("history", []))
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float32)
        model = _build_model(int(self.dim_in_), self.width_, self.bits)
        weights = {k[2:]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in arrays.items() if k.startswith("w.")}
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise EmbedkitError(f"{self.spec}: saved weights do not match the model ({e})") from e
        model.eval()
        self.model_ = model
