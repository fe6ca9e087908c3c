"""Multi-process training on CPU (gloo, two processes, tiny random model).

The loss checks run both ranks once (``torch.multiprocessing`` spawn, module fixture) and compare
them with a one-process run of the same examples in this process.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

B = 4           # per-rank batch
STEPS = 3       # ESimCSE steps for the queue check
TEXTS = [
    "the cat eats fish", "a dog runs fast", "stock price is high", "python code has a bug",
    "the queen and the king", "money in the bank", "a small bird sleep", "the old teacher run",
    "big company profit", "he and she play ball", "fast horse jump high", "search index query vector",
    "the cold fish", "a new list of data", "the father of the girl", "good doctor and nurse",
    "low rate economy", "the class error in file", "dollar and euro trade", "hot food for the pet",
    "the first game of the team", "short long test", "his mother is a doctor", "the mouse and the cow",
]


def _no_dropout(model):
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


def _dup_second_token(features):
    """A deterministic word repetition (duplicate token 1 of every row) for exact comparisons."""
    out = dict(features)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key in out:
            t = out[key]
            out[key] = torch.cat([t[:, :2], t[:, 1:2], t[:, 2:]], dim=1)
    return out


def _make_loss(name, model, gather):
    from embedkit.training.losses import ESimCSELoss, SimCSELoss

    if name == "simcse":
        return SimCSELoss(model, gather_across_devices=gather)
    loss = ESimCSELoss(model, queue_factor=2.5, gather_across_devices=gather)
    loss.ema_by_callback = True
    loss.repeat_words = _dup_second_token
    return loss


def _run(name, base, rows_per_step, gather, wrap=None, steps=1):
    """Train ``steps`` SGD steps; returns the losses, the gradients of step 1 and the loss."""
    model = _no_dropout(copy.deepcopy(base))
    model.train()
    loss = _make_loss(name, model, gather)
    net = wrap(model) if wrap else model
    loss.model = net  # as the trainer does: the loss calls the (DDP-wrapped) training model
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses, grads = [], None
    for s in range(steps):
        opt.zero_grad()
        feats = model.tokenize(rows_per_step(s))
        value = loss([feats])
        value.backward()
        losses.append(float(value.detach()))
        if grads is None:
            grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
        opt.step()
        if name == "esimcse":
            loss.momentum_update()
    return losses, grads, loss


def _worker(r, world, init_file, model_path, out_dir):
    from datetime import timedelta

    import torch.distributed as dist

    from embedkit import load_encoder

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=world,
                            timeout=timedelta(seconds=60))
    from torch.nn.parallel import DistributedDataParallel as DDP

    base = load_encoder(model_path)
    res = {}

    def rows(s):
        g = TEXTS[s * B * world:(s + 1) * B * world]
        return g[r * B:(r + 1) * B]

    def wrap(m):
        return DDP(m, find_unused_parameters=True)

    for name in ("simcse", "esimcse"):
        for gather in (True, False):
            steps = STEPS if name == "esimcse" else 1
            losses, grads, loss = _run(name, base, rows, gather, wrap, steps)
            res[(name, gather)] = {"losses": losses, "grads": grads}
            if name == "esimcse":
                res[(name, gather)]["queue"] = loss.queue.clone()
                res[(name, gather)]["momentum"] = {k: v.clone() for k, v in loss.momentum_model.state_dict().items()}
    torch.save(res, os.path.join(out_dir, f"rank{r}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(tiny_model_path, tmp_path_factory):
    import torch.multiprocessing as mp

    d = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, str(d / "init"), tiny_model_path, str(d)), nprocs=2, join=True)
    return [torch.load(d / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _reference(name, tiny_model, steps):
    return _run(name, tiny_model, lambda s: TEXTS[s * 2 * B:(s + 1) * 2 * B], True, None, steps)


def _assert_grads_close(a, b, atol):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max().item())


def _max_grad_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("name", ["simcse", "esimcse"])
def test_gathered_two_processes_equal_one_process_with_the_global_batch(ddp_runs, tiny_model, name):
    ref_losses, ref_grads, _ = _reference(name, tiny_model, 1)
    on = [ddp_runs[r][(name, True)] for r in range(2)]
    # DDP averages the ranks: the mean of the local losses is the loss of the global batch
    assert abs((on[0]["losses"][0] + on[1]["losses"][0]) / 2 - ref_losses[0]) < 1e-5
    for r in range(2):  # the DDP-averaged gradients equal the one-process gradients on every rank
        _assert_grads_close(on[r]["grads"], ref_grads, 1e-5)
    off = [ddp_runs[r][(name, False)] for r in range(2)]
    assert abs((off[0]["losses"][0] + off[1]["losses"][0]) / 2 - ref_losses[0]) > 1e-3
    assert _max_grad_diff(off[0]["grads"], ref_grads) > 1e-4  # without gathering the test would fail


def test_esimcse_queue_is_the_same_on_both_ranks_and_equals_one_process(ddp_runs, tiny_model):
    ref_losses, _, ref_loss = _reference("esimcse", tiny_model, STEPS)
    a, b = ddp_runs[0][("esimcse", True)], ddp_runs[1][("esimcse", True)]
    assert torch.equal(a["queue"], b["queue"])  # same tensors, same order, on both ranks
    assert a["queue"].shape == ref_loss.queue.shape == (int(2.5 * 2 * B), tiny_model.get_embedding_dimension())
    assert torch.allclose(a["queue"], ref_loss.queue, atol=1e-5)
    for k in a["momentum"]:  # identical momentum updates
        assert torch.equal(a["momentum"][k], b["momentum"][k]), k
    # later steps use the queue: the global loss still matches the one-process run
    for s in range(STEPS):
        assert abs((a["losses"][s] + b["losses"][s]) / 2 - ref_losses[s]) < 1e-5, s
    # without gathering each rank keeps its own queue of its own batches
    qa, qb = ddp_runs[0][("esimcse", False)]["queue"], ddp_runs[1][("esimcse", False)]["queue"]
    assert qa.shape[0] == int(round(2.5 * B)) and not torch.allclose(qa, qb)
