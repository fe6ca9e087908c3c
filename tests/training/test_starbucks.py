from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embedkit.errors import RecipeError
from embedkit.models.loading import load_encoder
from embedkit.testing import make_tiny_model
from embedkit.training.losses.starbucks import StarbucksLoss, check_ladder, default_ladder


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("sb") / "m", hidden=32, layers=3)


LADDER = [(1, 8), (2, 16), (3, 32)]
A = ["the cat is on the mat", "stock price of the bank", "a dog runs"]
P = ["a cat on a mat", "bank stock prices", "the dog is running"]


def _features(model, texts):
    return model.tokenize(texts)


def test_default_ladders():
    assert default_ladder(6, 384) == [(1, 32), (2, 64), (3, 128), (4, 192), (5, 256), (6, 384)]
    assert default_ladder(12, 768) == [(2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)]
    lad = default_ladder(3, 32)
    assert lad[-1] == (3, 32) and check_ladder(lad, 3, 32) == lad


def test_one_transformer_forward_per_column(tiny_path):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = load_encoder(tiny_path, device="cpu")
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), LADDER)
    calls = []
    auto = model[0].auto_model
    real = auto.forward

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    auto.forward = counting
    value = loss([_features(model, A), _features(model, P)], torch.zeros(3))
    assert len(calls) == 2  # one per text column, not one per ladder size
    value.backward()
    assert model[0].auto_model.embeddings.word_embeddings.weight.grad is not None


def test_loss_equals_direct_computation(tiny_path):
    """Inner MNRL at each size + KL(softmax(full[:, :d]) || softmax(sub[:, :d])) * 0.3, teacher detached."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(0)
    model = load_encoder(tiny_path, device="cpu")
    model.eval()  # no dropout: both computations see the same embeddings
    mnrl = MultipleNegativesRankingLoss(model)
    loss = StarbucksLoss(model, mnrl, LADDER, kl_temperature=0.3, kl_div_weight=1.0)
    got = loss([_features(model, A), _features(model, P)], torch.zeros(3))

    def emb(texts, L, D):
        sub = load_encoder(tiny_path, device="cpu", layers=L)  # full width, normalised: the model's own head
        sub.eval()
        return sub.encode(texts, convert_to_tensor=True)

    want = mnrl.compute_loss_from_embeddings([emb(A, 3, 32), emb(P, 3, 32)], None)
    teacher = torch.cat([emb(A, 3, 32), emb(P, 3, 32)])
    for L, D in LADDER[:-1]:
        a, p = emb(A, L, D), emb(P, L, D)
        want = want + mnrl.compute_loss_from_embeddings([F.normalize(a[:, :D], dim=-1), F.normalize(p[:, :D], dim=-1)], None)
        student = torch.cat([a, p])[:, :D]
        kl = (F.softmax(teacher[:, :D], -1) * (F.log_softmax(teacher[:, :D], -1) - F.log_softmax(student, -1))).sum(-1).mean()
        want = want + 0.3 * kl
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ladder,match", [
    ([(1, 8), (4, 16)], "beyond the model's depth 3"),
    ([(1, 8), (2, 64)], "beyond the model's width 32"),
    ([(2, 8), (1, 16)], "must increase"),
    ([(1, 16), (2, 16)], "must increase"),
    ([], "non-empty"),
])
def test_bad_ladders_are_one_line_errors(tiny_path, ladder, match):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = load_encoder(tiny_path, device="cpu")
    with pytest.raises(RecipeError, match=match):
        StarbucksLoss(model, MultipleNegativesRankingLoss(model), ladder)
