"""Training BEBR's recurrent binarizer: the network, its ITQ start, the objective and held-out selection.

Used by :class:`~embedkit.compression.bebr.BEBRQuantizer`; see its module docstring for the method and
for which choices are the paper's and which are embedkit's. In short:

* **Forward = backward for reconstruction.** The reconstruction error is computed on the *hard* codes
  (``sign``), with the codes detached: its gradient reaches ``P`` and the plane scales ``alpha`` (a
  Procrustes-style step with the codes fixed) and never the binarizer, so it cannot flip a bit. (Round 2
  passed the reconstruction gradient through a straight-through sign; wherever ``0 < |z| < alpha`` it
  drove ``z`` across zero and flipped the bit, raising the very error it minimised. An ITQ-style
  quantisation term ``|alpha b - z|^2`` for the binarizer was tried too: its updates of shared weights
  still flipped ~1% of the bits, so the binarizer learns from the ranking terms alone.)
* **Ranking terms** (straight-through sign): the InfoNCE pits a float query against decoded codes (the
  ADC score ``<q, decode(d)>``, as search computes it) with hard negatives picked from a queue of
  earlier codes; the listwise distillation matches, over each vector's nearest neighbours (centred
  space), the softmax of float cosines with that of code-code cosines (for one plane exactly the
  Hamming order SDC searches by) and of float-code cosines.
* **Training cannot make the codes worse**: a held-out part of the fitting set measures, after every
  epoch, how well SDC and ADC top-10 agree with exact float search (recall@10); the best epoch is kept,
  and the ITQ initialisation when no epoch beats it in both; training stops after ``patience`` epochs
  without a better one.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["build_model", "exact_topk", "init_from_itq", "refit_decoder", "split_holdout", "train"]

logger = logging.getLogger(__name__)

#: most held-out query vectors / corpus vectors the selection measures agreement on
HOLDOUT_MAX, SELECTION_CORPUS_MAX = 2000, 20_000
#: fitting sets smaller than this are not split (no selection: the trained model is kept)
HOLDOUT_MIN_N = 100


def build_model(d: int, m: int, u: int, residual_mlp: bool = True):
    """The recurrent binarizer: ``u`` blocks phi_t (linear ``d -> m`` [+ residual MLP]), shared ``P``, ``alpha``."""
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

        def forward(self, r, ste: bool = True, detach_codes: bool = False):
            """(planes (n, u, m) +-1, y (n, m), zs [(n, m)] * u).

            ``ste``: planes carry the straight-through gradient of ``clamp(z, -1, 1)``; ``detach_codes``:
            hard planes without gradient (the reconstruction path). ``y = sum_t alpha_t b_t``; the
            centred decoded vector is ``y @ P.T``.
            """
            P = self.P()
            alpha = self.log_alpha.exp()
            planes, zs, y = [], [], 0.0
            for t, phi in enumerate(self.phi):
                z = phi(r)
                hard = torch.where(z >= 0, 1.0, -1.0)
                if detach_codes or not ste:
                    b = hard.detach()
                else:
                    b = z.clamp(-1, 1) + (hard - z.clamp(-1, 1)).detach()
                planes.append(b)
                zs.append(z)
                y = y + alpha[t] * b
                r = r - alpha[t] * (b @ P.T)
            return torch.stack(planes, 1), y, zs

    return Model()


def init_from_itq(model, Xc, A: np.ndarray) -> None:
    """Start as ITQ + greedy residual sign quantization: phi_t's linear map = the ITQ rotation ``A``
    (m, d) divided by alpha_t, ``P = A^T``, residual blocks off (``fc2 = 0``), alpha_t = mean |residual
    coordinate|."""
    import torch

    u = len(model.phi)
    with torch.no_grad():
        At = torch.from_numpy(np.ascontiguousarray(A))
        model.P_raw.copy_(At.T)
        r = Xc @ At.T
        alphas = []
        for _ in range(u):
            a = float(r.abs().mean().clamp_min(1e-6))
            alphas.append(a)
            r = r - a * torch.where(r >= 0, 1.0, -1.0)
        model.log_alpha.copy_(torch.log(torch.tensor(alphas)))
        for phi, a in zip(model.phi, alphas):
            # z in units of the plane's scale (|z| ~ 1): the straight-through clamp(z, -1, 1) then passes
            # gradients near the decision boundary only, and the residual block's updates are small
            # beside z instead of swamping coordinates of size alpha (~0.03 for unit 384-d vectors)
            phi.lin.weight.copy_(At / a)
            phi.lin.bias.zero_()
            torch.nn.init.zeros_(phi.fc2.weight)
            torch.nn.init.zeros_(phi.fc2.bias)


def refit_decoder(model, Xc, n_iter: int = 3) -> None:
    """Fit ``P`` and ``alpha`` to the model's current hard codes of ``Xc`` in closed form (codes fixed):
    alternately the orthogonal Procrustes ``P`` for ``y = sum_t alpha_t b_t`` and the least-squares
    ``alpha`` for ``Xc P``. The decoder is then the best one for these codes, so what the ranking terms
    changed in the codes is not read through a decoder fitted to older ones (the ADC score and the
    reconstruction both use it)."""
    import torch

    with torch.no_grad():
        planes = torch.cat([model(Xc[i : i + 8192], ste=False)[0] for i in range(0, len(Xc), 8192)])  # (n, u, m)
        alpha = model.log_alpha.exp().clone()
        for _ in range(n_iter):
            y = torch.einsum("t,ntm->nm", alpha, planes)
            U, _, Vh = torch.linalg.svd(Xc.T @ y, full_matrices=False)  # (d, m), (m, m)
            P = U @ Vh
            target = Xc @ P  # (n, m)
            A = planes.permute(0, 2, 1).reshape(-1, planes.shape[1])  # (n*m, u)
            sol = torch.linalg.lstsq(A.double(), target.reshape(-1, 1).double()).solution.reshape(-1).float()
            alpha = sol.clamp_min(1e-6)
        model.P_raw.copy_(P)
        model.log_alpha.copy_(alpha.log())


def split_holdout(n: int, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): ``fraction`` held out (at most :data:`HOLDOUT_MAX`), none below
    :data:`HOLDOUT_MIN_N` vectors or with ``fraction`` 0."""
    rows = np.random.default_rng(seed + 7919).permutation(n)
    h = min(HOLDOUT_MAX, int(n * fraction))
    if n < HOLDOUT_MIN_N or h < 1:
        return np.sort(rows), np.zeros(0, dtype=np.int64)
    return np.sort(rows[h:]), np.sort(rows[:h])


def exact_topk(Q: np.ndarray, C: np.ndarray, k: int) -> np.ndarray:
    """Rows of the top-``k`` of ``C`` for each query by float inner product (what exact search returns)."""
    S = Q @ C.T
    return np.argpartition(-S, k - 1, axis=1)[:, :k]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, truth)]))


def _search_both(quantizer, Q: np.ndarray, docs: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Top-``k`` rows of SDC and ADC search, as :class:`~embedkit.compression.bebr_index.BEBRIndex` scores
    them, over ``docs`` encoded once."""
    codes = quantizer.encode(docs)
    out = {}
    for scoring in ("sdc", "adc"):
        index = quantizer.new_index("flat", scoring=scoring)
        index.add_codes(codes)
        out[scoring] = index.search(Q, k)[1]
    return out


def agreement(quantizer, Q: np.ndarray, C: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Recall@k of SDC and ADC search against exact float search: held-out vectors ``Q`` as queries over
    the corpus ``C``."""
    return {scoring: _recall(rows, truth) for scoring, rows in _search_both(quantizer, Q, C, truth.shape[1]).items()}


def pair_recall(quantizer, Qp: np.ndarray, Dp: np.ndarray, C: np.ndarray) -> dict[str, float]:
    """Recall@10 of each held-out pair's document among the pair documents and the corpus ``C`` (SDC, ADC)."""
    docs = np.concatenate([Dp, C])
    found = _search_both(quantizer, Qp, docs, min(10, len(docs)))
    return {f"pairs_{scoring}": float(np.mean([i in r for i, r in enumerate(rows)])) for scoring, rows in found.items()}


def train(quantizer, X: np.ndarray, Xc, groups, gen, *, holdout: tuple[np.ndarray, np.ndarray] | None,
          pairs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Train ``quantizer.model_`` on the rows of ``X`` (``Xc`` = centred torch copy, ``groups`` = duplicate
    ids); select the best epoch on ``holdout = (queries, corpus)`` rows. Fills ``history_`` and
    ``selection_``."""
    import copy

    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    q = quantizer
    model = q.model_
    train_rows = np.arange(len(X)) if holdout is None else np.setdiff1d(np.arange(len(X)), holdout[0])
    Xt = torch.from_numpy(np.ascontiguousarray(X[train_rows]))
    Xct, gt = Xc[train_rows], groups[train_rows]
    n = len(train_rows)
    bs = min(int(q.batch_size), n)
    epochs, patience = int(q.epochs), int(q.n_iter_no_change)
    queue_size, n_hard = int(q.queue_size), int(q.hard_negatives)
    temperature, distill_t = float(q.temperature), float(q.distill_temperature)
    nce_w, rec_w, dist_w = float(q.nce_weight), float(q.recon_weight), float(q.distill_weight)
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * epochs
    unused = () if q.residual_mlp else ("fc1", "fc2", "norm")
    params = [p for name, p in model.named_parameters() if not any(f".{k}." in name for k in unused)]
    opt = torch.optim.Adam(params, lr=float(q.lr))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    mean = torch.from_numpy(q.mean_)
    sq_norm = float((Xct**2).sum(1).mean())
    queue = torch.zeros((0, Xc.shape[1]))
    queue_groups = torch.zeros((0,), dtype=torch.int64)
    Xn = F.normalize(Xct, dim=1)  # centred, unit: the distillation's float side
    knn = _neighbours(Xn, int(q.n_neighbours)) if dist_w > 0 else None
    pair_w = float(q.pair_weight) if pairs is not None else 0.0
    held_pairs = None
    if pair_w > 0:
        pq_all, pd_all = (np.ascontiguousarray(a, dtype=np.float32) for a in pairs)
        if holdout is not None:  # the same share of the pairs is held out for the selection
            p_train, p_held = split_holdout(len(pq_all), int(q.seed), float(q.validation_fraction))
            if len(p_held):
                held_pairs = (pq_all[p_held], pd_all[p_held])
                pq_all, pd_all = pq_all[p_train], pd_all[p_train]
        Pq, Pd = torch.from_numpy(pq_all), torch.from_numpy(pd_all)
        _, pair_doc_groups = np.unique(pd_all, axis=0, return_inverse=True)
        pair_doc_groups = torch.from_numpy(pair_doc_groups.reshape(-1).astype(np.int64))
        pair_bs = min(bs, len(Pq))

    sel_q = sel_c = truth = None
    if holdout is not None and len(holdout[0]):
        sel_q, sel_c = X[holdout[0]], X[holdout[1]]
        truth = exact_topk(sel_q, sel_c, min(10, len(sel_c)))

    def measure() -> dict[str, float]:
        model.eval()
        out = agreement(q, sel_q, sel_c, truth)
        if held_pairs is not None:
            out.update(pair_recall(q, held_pairs[0], held_pairs[1], sel_c))
        return out

    # with pairs the task's own measure decides (the held-out pairs' recall, SDC and ADC); without them,
    # agreement with exact float search. Every measure that decides must be at least the start's.
    selection = {"metric": "recall@10 of held-out pairs' documents, SDC and ADC (float-search agreement recorded)"
                           if held_pairs is not None else
                           "recall@10 of SDC and ADC against exact float search on held-out vectors",
                 "held_out": 0 if sel_q is None else len(sel_q), "corpus": 0 if sel_c is None else len(sel_c),
                 "held_out_pairs": 0 if held_pairs is None else len(held_pairs[0]), "epochs": []}
    best_state, best_epoch, best_score, init_scores = None, 0, None, None
    if sel_q is not None:
        init_scores = measure()
        selection["epochs"].append({"epoch": 0, **init_scores})
        deciding = [k for k in init_scores if k.startswith("pairs_")] if held_pairs is not None else list(init_scores)
        best_state, best_score = copy.deepcopy(model.state_dict()), sum(init_scores[k] for k in deciding)
    bar = tqdm(total=total, desc=f"fitting {q.spec}", unit="step", disable=not q.show_progress)
    since_best = 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        sums = np.zeros(3)
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            x, xu, g = Xct[idx], Xt[idx], gt[idx]
            # reconstruction on the hard codes (what is decoded), codes detached: it fits P and alpha to
            # the codes and never moves the binarizer, so it cannot flip a bit
            _, y_hard, _ = model(x, detach_codes=True)
            P = model.P()
            rec = ((y_hard @ P.T - x) ** 2).sum(1).mean() / sq_norm
            loss = rec_w * rec
            # ranking terms through the straight-through sign
            _, y, _ = model(x)
            dec = mean + y @ P.T  # uncentred decoded code: what ADC scores a float query against
            nce = torch.zeros(())
            if nce_w > 0:
                keys = torch.cat([dec, queue]) if len(queue) else dec
                key_groups = torch.cat([g, queue_groups]) if len(queue) else g
                logits = xu @ keys.T / temperature
                same = key_groups[None, :] == g[:, None]
                same[torch.arange(len(idx)), torch.arange(len(idx))] = False
                logits = logits.masked_fill(same, float("-inf"))
                b = len(idx)
                if n_hard and logits.shape[1] > b + n_hard:
                    # hard negatives from the queue: each anchor keeps its highest-scoring queued codes
                    hard = logits[:, b:].detach().topk(n_hard, dim=1).indices + b
                    logits = torch.cat([logits[:, :b], logits.gather(1, hard)], dim=1)
                nce = F.cross_entropy(logits, torch.arange(b))
                loss = loss + nce_w * nce
            dist = torch.zeros(())
            if dist_w > 0:
                # listwise, over each anchor's nearest fitting vectors: the ranking by the code-code
                # cosine (SDC) and by the float-code cosine (ADC) must follow the float-float one
                nb = knn[idx]
                K = nb.shape[1]
                _, y_nb, _ = model(Xct[nb.reshape(-1)])
                xn = F.normalize(x, dim=1)
                yn = F.normalize(y, dim=1)
                yn_nb = F.normalize(y_nb, dim=1).reshape(len(idx), K, -1)
                dec_nb = F.normalize(y_nb @ P.T, dim=1).reshape(len(idx), K, -1)
                teacher = torch.einsum("bd,bkd->bk", xn, Xn[nb]) / distill_t
                sdc = torch.einsum("bm,bkm->bk", yn, yn_nb) / distill_t
                adc = torch.einsum("bd,bkd->bk", xn, dec_nb) / distill_t
                lt = F.log_softmax(teacher, 1)
                dist = 0.5 * (F.kl_div(F.log_softmax(sdc, 1), lt, log_target=True, reduction="batchmean")
                              + F.kl_div(F.log_softmax(adc, 1), lt, log_target=True, reduction="batchmean"))
                loss = loss + dist_w * dist
            if pair_w > 0:
                loss = loss + pair_w * _pair_infonce(model, mean, Pq, Pd, pair_doc_groups, pair_bs, temperature, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if queue_size > 0 and nce_w > 0:
                keep = ~torch.isin(queue_groups, g)
                queue = torch.cat([dec.detach(), queue[keep]])[:queue_size]
                queue_groups = torch.cat([g, queue_groups[keep]])[:queue_size]
            sums += [nce.item(), rec.item(), dist.item()]
            bar.update(1)
        avg = sums / steps_per_epoch
        row = {"epoch": epoch + 1, "infonce": float(avg[0]), "recon": float(avg[1]), "distill": float(avg[2])}
        refit_decoder(model, Xct)
        if sel_q is not None:
            scores = measure()
            row.update(scores)
            selection["epochs"].append({"epoch": epoch + 1, **scores})
            # an epoch counts only if no deciding measure fell below the start: trained >= untrained, SDC and ADC
            score = sum(scores[k] for k in deciding)
            if all(scores[k] >= init_scores[k] for k in deciding) and score > best_score:
                best_state, best_epoch, best_score = copy.deepcopy(model.state_dict()), epoch + 1, score
                since_best = 0
            else:
                since_best += 1
        q.history_.append(row)
        bar.set_postfix(nce=f"{avg[0]:.3f}", rec=f"{avg[1]:.3f}")
        logger.debug("%s epoch %d: infonce %.4f recon %.4f distill %.4f", q.spec, epoch + 1, *avg)
        if sel_q is not None and since_best >= patience:
            logger.info("%s: no better epoch in %d, stopping after epoch %d", q.spec, patience, epoch + 1)
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
        selection["chosen_epoch"] = best_epoch
        if best_epoch == 0:
            logger.info("%s: no trained epoch beat the ITQ initialisation on held-out vectors (SDC %.3f, ADC %.3f); "
                        "keeping the initialisation", q.spec, init_scores["sdc"], init_scores["adc"])
    else:
        selection["chosen_epoch"] = len(q.history_)
    model.eval()
    q.selection_ = selection


def _pair_infonce(model, mean, Pq, Pd, doc_groups, bs: int, temperature: float, gen):
    """Query-document InfoNCE on a random batch of pairs, scored as search scores them (ADC and SDC)."""
    import torch
    import torch.nn.functional as F

    sel = torch.randperm(len(Pq), generator=gen)[:bs]
    q, d, g = Pq[sel], Pd[sel], doc_groups[sel]
    P = model.P()
    _, yq, _ = model(q - mean)
    _, yd, _ = model(d - mean)
    same = g[None, :] == g[:, None]
    same.fill_diagonal_(False)  # one document relevant to two queries of the batch is not their negative
    adc = (q @ (mean + yd @ P.T).T).masked_fill(same, float("-inf")) / temperature
    sdc = (F.normalize(yq, dim=1) @ F.normalize(yd, dim=1).T).masked_fill(same, float("-inf")) / temperature
    target = torch.arange(len(sel))
    return 0.5 * (F.cross_entropy(adc, target) + F.cross_entropy(sdc, target))


def _neighbours(Xn, n_neighbours: int):
    """Indices (n, K) of each vector's K nearest others by cosine."""
    import torch

    K = min(n_neighbours, len(Xn) - 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(Xn), 2048):
            sim = Xn[i : i + 2048] @ Xn.T
            sim[torch.arange(len(sim)), torch.arange(i, i + len(sim))] = -2.0
            out.append(sim.topk(K, dim=1).indices)
    return torch.cat(out)
