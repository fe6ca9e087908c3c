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


def _emb(path, texts, L, *, normalize=True):
    """Layer-L sentence embeddings of ``texts`` from the L-layer sub-model (independent of the loss's code):
    full width, normalised (the model's own head) or, with ``normalize=False``, its pooled output before Normalize."""
    sub = load_encoder(path, device="cpu", layers=L)
    sub.eval()
    if not normalize:
        del sub[len(sub) - 1]  # the Normalize truncate_encoder appends
    with torch.no_grad():
        return sub.encode(texts, convert_to_tensor=True, normalize_embeddings=False)


def _kl(teacher_logits, student_logits):
    """KL(softmax(teacher) || softmax(student)) per row, averaged over rows (batchmean)."""
    pt = F.softmax(teacher_logits, -1)
    return (pt * (F.log_softmax(teacher_logits, -1) - F.log_softmax(student_logits, -1))).sum(-1).mean()


def _cut(x, d):
    return F.normalize(x[:, :d], dim=-1)


def test_loss_equals_direct_computation(tiny_path):
    """Inner MNRL at each size + 0.3 * KL(softmax(full[:, :d]) || softmax(sub[:, :d])) on the pooled embeddings
    before Normalize (the reference's models have none), teacher detached."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = load_encoder(tiny_path, device="cpu")
    model.eval()  # no dropout: both computations see the same embeddings
    mnrl = MultipleNegativesRankingLoss(model)
    loss = StarbucksLoss(model, mnrl, LADDER, kl_temperature=0.3, kl_div_weight=1.0)
    got = loss([_features(model, A), _features(model, P)], torch.zeros(3))

    want = mnrl.compute_loss_from_embeddings([_emb(tiny_path, A, 3), _emb(tiny_path, P, 3)], None)
    teacher = torch.cat([_emb(tiny_path, A, 3, normalize=False), _emb(tiny_path, P, 3, normalize=False)])
    kl = 0.0
    for L, D in LADDER[:-1]:
        a, p = _emb(tiny_path, A, L), _emb(tiny_path, P, L)
        want = want + mnrl.compute_loss_from_embeddings([_cut(a, D), _cut(p, D)], None)
        student = torch.cat([_emb(tiny_path, A, L, normalize=False), _emb(tiny_path, P, L, normalize=False)])
        kl = kl + 0.3 * _kl(teacher[:, :D], student[:, :D])
    torch.testing.assert_close(got.detach(), want + kl, rtol=1e-5, atol=1e-6)
    assert loss.last_terms["kl"] == pytest.approx(float(kl), rel=1e-4)


def test_kl_term_does_not_depend_on_a_trailing_normalize(tiny_path, tmp_path):
    """The same weights with and without a Normalize module give the same KL term (it was ~35x weaker with one)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    plain = make_tiny_model(tmp_path / "plain", hidden=32, layers=3, normalize=False)  # same seed: same weights
    terms = {}
    for name, path in (("normalize", tiny_path), ("plain", plain)):
        model = load_encoder(path, device="cpu")
        model.eval()
        loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), LADDER)
        total = loss([_features(model, A), _features(model, P)], torch.zeros(3))
        terms[name] = (float(total.detach()), loss.last_terms["kl"])
    assert [type(m).__name__ for m in load_encoder(tiny_path)][-1] == "Normalize"
    assert terms["normalize"][1] == pytest.approx(terms["plain"][1], rel=1e-5)
    assert terms["normalize"][0] == pytest.approx(terms["plain"][0], rel=1e-5)
    # what the old code computed: the KL on unit vectors, much smaller
    unit = sum(0.3 * _kl(torch.cat([_emb(tiny_path, A, 3), _emb(tiny_path, P, 3)])[:, :D],
                         torch.cat([_emb(tiny_path, A, L), _emb(tiny_path, P, L)])[:, :D]) for L, D in LADDER[:-1])
    assert terms["normalize"][1] > 5 * float(unit)


def test_retrieval_kl_variant_against_an_independent_computation(tiny_path):
    """kl: scores = KL(softmax(S_full / t) || softmax(S_l,d / t)) over each anchor's in-batch candidates."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = load_encoder(tiny_path, device="cpu")
    model.eval()
    mnrl = MultipleNegativesRankingLoss(model, scale=20.0)
    N = ["the market rate is low", "python code has a bug", "the queen and the king"]
    loss = StarbucksLoss(model, mnrl, LADDER, kl="scores", kl_div_weight=0.7)
    assert loss.score_temperature == pytest.approx(0.05)  # the inner loss's own temperature, 1 / scale
    loss([_features(model, A), _features(model, P), _features(model, N)], torch.zeros(3))

    cands = {L: torch.cat([_emb(tiny_path, P, L), _emb(tiny_path, N, L)]) for L in (1, 2, 3)}
    full = _cut(_emb(tiny_path, A, 3), 32) @ _cut(cands[3], 32).T
    want = sum(0.7 * _kl(full / 0.05, _cut(_emb(tiny_path, A, L), D) @ _cut(cands[L], D).T / 0.05)
               for L, D in LADDER[:-1])
    assert loss.last_terms["kl"] == pytest.approx(float(want), rel=1e-4)
    assert float(want) > 1e-3


def test_distillation_from_the_frozen_starting_model(tiny_path):
    """distil_weight: every size, the full one included, against the starting model's in-batch scores; the
    starting model stays frozen and outside the trained parameters."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = load_encoder(tiny_path, device="cpu")
    model.eval()
    loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), LADDER, distil_weight=0.5)
    assert not any(p is q for p in loss.parameters() for q in loss.__dict__["_start"].parameters())
    feats = [_features(model, A), _features(model, P)]
    loss(feats, torch.zeros(3))
    start = _cut(_emb(tiny_path, A, 3), 32) @ _cut(_emb(tiny_path, P, 3), 32).T
    want = sum(0.5 * _kl(start / 0.05, _cut(_emb(tiny_path, A, L), D) @ _cut(_emb(tiny_path, P, L), D).T / 0.05)
               for L, D in LADDER)  # the full size's own term is 0 before training
    assert loss.last_terms["distil"] == pytest.approx(float(want), rel=1e-4)

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = [p.detach().clone() for p in loss.__dict__["_start"].parameters()]
    for _ in range(2):
        opt.zero_grad()
        loss(feats, torch.zeros(3)).backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, loss.__dict__["_start"].parameters()))
    loss(feats, torch.zeros(3))
    assert loss.last_terms["distil"] != pytest.approx(float(want), rel=1e-3)  # the model moved, the teacher did not
    # losses built together share one frozen copy; one built after training copies the trained weights
    again = StarbucksLoss(model, MultipleNegativesRankingLoss(model), LADDER, distil_weight=0.5)
    assert again.__dict__["_start"] is not loss.__dict__["_start"]
    assert StarbucksLoss(model, MultipleNegativesRankingLoss(model), LADDER, distil_weight=1.0).__dict__["_start"] \
        is again.__dict__["_start"]


def test_full_size_anchor_is_the_cosine_distance_to_the_starting_model(tiny_path):
    """anchor_weight: 0 before training, then the weighted mean cosine distance of the full-size embeddings to
    the frozen start's; training with a large weight keeps the full size closer to where it started."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    feats_of = lambda m: [_features(m, A), _features(m, P)]  # noqa: E731
    moved = {}
    for weight in (0.0, 50.0):
        torch.manual_seed(0)
        model = load_encoder(tiny_path, device="cpu")
        model.eval()
        loss = StarbucksLoss(model, MultipleNegativesRankingLoss(model), LADDER, anchor_weight=weight)
        loss(feats_of(model), torch.zeros(3))
        assert loss.last_terms["anchor"] == pytest.approx(0.0, abs=1e-4)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(3):
            opt.zero_grad()
            loss(feats_of(model), torch.zeros(3)).backward()
            opt.step()
        loss(feats_of(model), torch.zeros(3))
        start = torch.cat([_emb(tiny_path, A, 3), _emb(tiny_path, P, 3)])
        now = torch.cat([torch.as_tensor(model.encode(A)), torch.as_tensor(model.encode(P))])
        dist = float((1 - torch.nn.functional.cosine_similarity(now, start, dim=-1)).mean())
        if weight:
            assert loss.last_terms["anchor"] == pytest.approx(weight * dist, rel=1e-3, abs=1e-6)
        moved[weight] = dist
    assert moved[0.0] > 1e-4 and moved[50.0] < 0.5 * moved[0.0]
    with pytest.raises(RecipeError, match="anchor_weight"):
        StarbucksLoss(model, MultipleNegativesRankingLoss(model), LADDER, anchor_weight=-1)


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
