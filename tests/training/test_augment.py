from __future__ import annotations

import collections

import torch

from embedkit.training.augment import repeat_tokens, repetition_count_bound, word_repetition

CLS, SEP, PAD = 101, 102, 0
SPECIAL = [CLS, SEP, PAD]


def _batch(rows):
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _is_in_place_duplication(orig, new):
    """new equals orig with some tokens doubled in place: removing one copy of each doubled run gives orig."""
    i = j = 0
    extra = 0
    while j < len(new):
        if i < len(orig) and new[j] == orig[i]:
            if j + 1 < len(new) and new[j + 1] == orig[i] and not (i + 1 < len(orig) and orig[i + 1] == orig[i]):
                j += 2
                extra += 1
            else:
                j += 1
            i += 1
        else:
            return False, extra
    return i == len(orig), extra


def test_count_bound_matches_reference_formula():
    assert repetition_count_bound(32, 0.32) == 10
    assert repetition_count_bound(20, 0.32) == 6
    assert repetition_count_bound(100, 0.32) == 10  # capped at 10
    assert repetition_count_bound(3, 0.32) == 0     # int(0.96) == 0 -> nothing repeated


def test_never_special_only_lengthens_and_count_bound():
    g = torch.Generator().manual_seed(0)
    rows = [[CLS] + list(range(1000, 1000 + n)) + [SEP] for n in (1, 5, 12, 30, 60)]
    counts = collections.defaultdict(list)
    for _ in range(200):
        out = word_repetition(_batch(rows), special_ids=SPECIAL, pad_id=PAD, generator=g)
        for r, orig in enumerate(rows):
            n = int(out["attention_mask"][r].sum())
            new = out["input_ids"][r, :n].tolist()
            assert out["input_ids"][r, n:].eq(PAD).all()
            assert n >= len(orig)
            assert new[0] == CLS and new[-1] == SEP
            assert new.count(CLS) == 1 and new.count(SEP) == 1  # specials never duplicated
            added = n - len(orig)
            assert added < max(1, repetition_count_bound(len(orig)))
            # every original token kept in order; each added token is a copy placed next to its source
            assert [t for t in dict.fromkeys(new)] == orig  # distinct ids -> order preserved
            assert sorted(set(new)) == sorted(orig)
            counts[len(orig)].append(added)
    # uniform over [0, bound): all values appear, none reaches the bound
    for n_tokens, seen in counts.items():
        bound = repetition_count_bound(n_tokens)
        if bound > 0:
            assert set(seen) == set(range(bound)), (n_tokens, sorted(set(seen)))


def test_repeat_tokens_in_place_and_sources():
    g = torch.Generator().manual_seed(3)
    ids = [CLS, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, SEP]
    for _ in range(50):
        new, src = repeat_tokens(ids, special_ids=SPECIAL, generator=g)
        assert [ids[s] for s in src] == new
        assert src == sorted(src)  # duplicated in place
        ok, _ = _is_in_place_duplication(ids, new)
        assert ok


def test_token_type_ids_follow_and_input_untouched():
    rows = [[CLS] + list(range(2000, 2040)) + [SEP]]
    batch = _batch(rows)
    batch["token_type_ids"][0, 5:10] = 1
    before = batch["input_ids"].clone()
    out = word_repetition(batch, special_ids=SPECIAL, generator=torch.Generator().manual_seed(1))
    assert torch.equal(batch["input_ids"], before)
    n = int(out["attention_mask"][0].sum())
    tt = dict(zip(batch["input_ids"][0].tolist(), batch["token_type_ids"][0].tolist()))
    for tok, t in zip(out["input_ids"][0, :n].tolist(), out["token_type_ids"][0, :n].tolist()):
        assert tt[tok] == t


def test_max_length_keeps_final_special():
    rows = [[CLS] + list(range(3000, 3062)) + [SEP]]
    for seed in range(20):
        out = word_repetition(_batch(rows), special_ids=SPECIAL, max_length=64,
                              generator=torch.Generator().manual_seed(seed))
        n = int(out["attention_mask"][0].sum())
        assert n <= 64 and out["input_ids"][0, n - 1] == SEP


def test_esimcse_loss_repeats_only_second_view(tiny_model):
    from embedkit.training.losses import ESimCSELoss

    loss = ESimCSELoss(tiny_model)
    feats = tiny_model.tokenize(["the cat and the dog play a long game of ball in the market"] * 4)
    seen = []
    orig = loss.repeat_words

    def spy(f):
        out = orig(f)
        seen.append((f["input_ids"].clone(), out["input_ids"].clone()))
        return out

    loss.repeat_words = spy
    tiny_model.train()
    first_before = feats["input_ids"].clone()
    loss([feats])
    tiny_model.eval()
    assert torch.equal(feats["input_ids"], first_before)  # first view untouched
    assert len(seen) == 1
    a, b = seen[0]
    assert b.shape[1] >= a.shape[1]
