from __future__ import annotations

import copy

import torch

from embedkit.training.losses import ESimCSELoss, SimCSELoss, info_nce


def test_info_nce_matches_manual():
    torch.manual_seed(0)
    a, p, q = torch.randn(4, 8), torch.randn(4, 8), torch.randn(6, 8)
    an = torch.nn.functional.normalize(a, dim=-1)
    logits = torch.cat([an @ torch.nn.functional.normalize(p, dim=-1).T,
                        an @ torch.nn.functional.normalize(q, dim=-1).T], 1) / 0.05
    manual = -(logits.log_softmax(1)[torch.arange(4), torch.arange(4)]).mean()
    assert torch.allclose(info_nce(a, p, 0.05, q), manual, atol=1e-5)
    assert info_nce(a, p, 0.05, q) > info_nce(a, p, 0.05)  # more negatives, larger loss


def test_ema_update_math(tiny_model):
    model = copy.deepcopy(tiny_model)
    loss = ESimCSELoss(model, momentum=0.9)
    m0 = {k: v.clone() for k, v in loss.momentum_model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    theta = {k: v.clone() for k, v in model.named_parameters()}
    loss.momentum_update()
    for k, v in loss.momentum_model.named_parameters():
        assert torch.allclose(v, 0.9 * m0[k] + 0.1 * theta[k], atol=1e-6), k
        assert not v.requires_grad
    # the momentum encoder is not a registered submodule: the optimiser never sees it
    assert all(not n.startswith("_momentum") for n, _ in loss.named_parameters())


def test_queue_fifo_order_and_size(tiny_model):
    loss = ESimCSELoss(tiny_model, queue_factor=2.5)
    batches = [torch.full((4, 3), float(i)) for i in range(5)]
    loss.enqueue(batches[0])
    assert loss.queue_size == 10 and loss.queue.shape == (4, 3)
    for b in batches[1:]:
        loss.enqueue(b)
    assert loss.queue.shape == (10, 3)
    # newest 10 rows, oldest first: 2 rows of batch 2, then batches 3 and 4
    assert loss.queue[:, 0].tolist() == [2.0] * 2 + [3.0] * 4 + [4.0] * 4


def test_forward_enqueues_momentum_eval_embeddings_of_first_view(tiny_model):
    model = copy.deepcopy(tiny_model)
    loss = ESimCSELoss(model, queue_size=6)
    loss.ema_by_callback = True  # no EMA in forward: momentum encoder == initial weights
    feats = model.tokenize(["the cat", "a dog runs", "stock price", "python code"])
    model.train()
    value = loss([feats])
    value.backward()
    assert loss.queue.shape == (4, model.get_embedding_dimension())
    model.eval()
    with torch.no_grad():
        expected = model(dict(feats))["sentence_embedding"]  # eval mode: no dropout
    assert torch.allclose(loss.queue, expected, atol=1e-5)
    assert not loss.queue.requires_grad
    model.train()
    loss([feats])
    assert loss.queue.shape[0] == 6  # capped FIFO


def test_simcse_loss_single_and_pair_columns(tiny_model):
    model = copy.deepcopy(tiny_model)
    loss = SimCSELoss(model)
    feats = model.tokenize(["the cat", "a dog runs", "stock price", "python code"])
    model.eval()  # no dropout: both views identical
    one = loss([feats])
    two = loss([feats, dict(feats)])
    assert torch.allclose(one, two)


def test_restored_queue_follows_the_model_device_and_dtype(tiny_model, tmp_path):
    """After a resume on a GPU the queue must live where the model does (checked with the "meta" device)."""
    model = copy.deepcopy(tiny_model)
    loss = ESimCSELoss(model, queue_size=6)
    dim = model.get_embedding_dimension()
    loss.enqueue(torch.randn(4, dim))
    loss.save_training_state(tmp_path)
    saved = loss.queue.clone()
    model.to(device="meta", dtype=torch.float16)  # stands in for "moved to the accelerator"
    assert loss.load_training_state(tmp_path)
    assert loss.queue.device.type == "meta" and loss.queue.dtype == torch.float16
    # and on the CPU the values come back exactly
    model2 = copy.deepcopy(tiny_model)
    loss2 = ESimCSELoss(model2, queue_size=6)
    assert loss2.load_training_state(tmp_path)
    assert loss2.queue.device.type == "cpu" and torch.equal(loss2.queue, saved)


def test_queue_is_emptied_at_each_new_epoch_but_not_when_resuming_inside_one(tiny_model):
    from types import SimpleNamespace

    from embedkit.training.losses import MomentumUpdateCallback

    loss = ESimCSELoss(copy.deepcopy(tiny_model), queue_size=6)
    cb = MomentumUpdateCallback(loss)
    loss.enqueue(torch.ones(4, 3))
    cb.on_epoch_begin(None, SimpleNamespace(epoch=0.25), None)  # a resumed run re-enters epoch 0
    assert loss.queue is not None and loss.queue.shape == (4, 3)
    cb.on_epoch_begin(None, SimpleNamespace(epoch=1.0), None)  # epoch 1 starts: as the reference, pre_z1 = None
    assert loss.queue is None
    loss.enqueue(torch.ones(2, 3))
    cb.on_epoch_begin(None, SimpleNamespace(epoch=None), None)  # the first epoch of a fresh run
    assert loss.queue is None
