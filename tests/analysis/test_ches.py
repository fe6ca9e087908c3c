from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embedkit.analysis.ches import PreferencePair, ches_scores, read_preference_pairs, top_ches
from embedkit.errors import DataFormatError
from tiny_models import tiny_gpt2

PAIRS = [
    PreferencePair("the man is a", "doctor", "nurse and the woman is a doctor"),
    PreferencePair("she is", "good", "bad"),
    PreferencePair("the king and the queen", "win the game with the team", "lose"),
    PreferencePair("news", "the market is good for money", "the film"),
    PreferencePair("a long text of the paper", "study result", "cell protein gene data model word"),
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


def direct(model, tok, prompt, response, normalized):
    """One example at a time, no padding, no batching: the definition."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        H = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].double()
    rows = [H[len(p) - 1 + k] for k in range(len(r))]  # h(x, y_<k) predicts y_k
    S = torch.stack(rows).sum(0)
    return S / len(r) if normalized else S


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_matches_direct_loop_with_padding(lm, batch_size):
    model, tok = lm
    got = ches_scores(model, tok, PAIRS, batch_size=batch_size)
    for norm, key in ((False, "ches"), (True, "ches_normalized")):
        want = []
        for p in PAIRS:
            sp, sm = direct(model, tok, p.prompt, p.chosen, norm), direct(model, tok, p.prompt, p.rejected, norm)
            want.append(float(sp @ sm - sp @ sp))
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-4)
    assert list(got["chosen_tokens"]) == [1, 1, 6, 6, 2]


def test_top_fraction_and_count():
    s = np.array([0.1, 5, 3, -1, 4.0])
    assert list(top_ches(s, 0.4)) == [1, 4]
    assert list(top_ches(s, 1)) == [1]


def test_pairs_file_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "extra": 1}) + "\n")
    assert read_preference_pairs(good)[0].rejected == "b"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n" + json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: missing field 'rejected'"):
        read_preference_pairs(bad)
    notjson = tmp_path / "nj.jsonl"
    notjson.write_text("{oops\n")
    with pytest.raises(DataFormatError, match="nj.jsonl:1: not valid JSON"):
        read_preference_pairs(notjson)
