from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import tiny_gpt2

from embedkit.analysis.ches import PreferencePair, ches_scores, read_preference_pairs, top_ches
from embedkit.errors import DataFormatError, EmbedkitError

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


def direct(model, tok, prompt, response, normalized, eos=None):
    """One example at a time, no padding, no batching: the definition (with ``eos``: the response ends with it)."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    ids = torch.tensor([p + r])
    with torch.no_grad():
        H = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].double()
    rows = [H[len(p) - 1 + k] for k in range(len(r))]  # h(x, y_<k) predicts y_k
    S = torch.stack(rows).sum(0)
    return S / len(r) if normalized else S


@pytest.mark.parametrize("include_eos", [True, False])
@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_matches_direct_loop_with_padding(lm, batch_size, include_eos):
    model, tok = lm
    eos = model.config.eos_token_id if include_eos else None
    assert tok.eos_token_id is None and eos != tok.pad_token_id  # the EOS comes from the model config here
    got = ches_scores(model, tok, PAIRS, batch_size=batch_size, include_eos=include_eos)
    for norm, key in ((False, "ches"), (True, "ches_normalized")):
        want = []
        for p in PAIRS:
            sp = direct(model, tok, p.prompt, p.chosen, norm, eos)
            sm = direct(model, tok, p.prompt, p.rejected, norm, eos)
            want.append(float(sp @ sm - sp @ sp))
        np.testing.assert_allclose(got[key], want, rtol=1e-4, atol=1e-4)
    assert list(got["chosen_tokens"]) == [n + bool(include_eos) for n in [1, 1, 6, 6, 2]]


def test_eos_changes_the_score_and_needs_a_token(lm):
    model, tok = lm
    with_eos = ches_scores(model, tok, PAIRS[:2])["ches"]
    without = ches_scores(model, tok, PAIRS[:2], include_eos=False)["ches"]
    assert not np.allclose(with_eos, without)

    class NoEos:
        config = None

        def __getattr__(self, name):
            return getattr(model, name)

        def __call__(self, *a, **kw):
            return model(*a, **kw)

    with pytest.raises(EmbedkitError, match="include_eos=True needs an EOS token"):
        ches_scores(NoEos(), tok, PAIRS[:1])


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
    with pytest.raises(DataFormatError, match="nj.jsonl:1: invalid JSON"):
        read_preference_pairs(notjson)


def test_pairs_file_gz_and_bad_utf8(tmp_path):
    import gzip

    line = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n"
    gz = tmp_path / "p.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(line * 3)
    assert len(read_preference_pairs(gz)) == 3  # the second JSONL reader had no .gz support
    bad = tmp_path / "u.jsonl"
    bad.write_bytes(line.encode() + b'{"prompt": "\xff"}\n')
    with pytest.raises(DataFormatError, match=rf"u.jsonl:2: not valid UTF-8 \(invalid start byte at byte {len(line) + 12}\)"):
        read_preference_pairs(bad)
