from __future__ import annotations

import json

import numpy as np
import pytest

from embedkit.debias import DebiasInputError, HardDebias, direct_bias, load_word_lists
from embedkit.debias.word_lists import read_pairs
from embedkit.debias.word_vectors import to_keyed_vectors
from embedkit.errors import DataFormatError, NotFittedError

DEF = [("she", "he"), ("woman", "man"), ("her", "his"), ("girl", "boy")]
EQ = [("queen", "king"), ("Mother", "Father")]
SPECIFIC = ["she", "he", "woman", "man", "her", "his", "girl", "boy", "queen", "king", "mother", "father"]
NEUTRAL = ["doctor", "nurse", "engineer", "teacher", "table", "river"]


@pytest.fixture
def kv():
    rng = np.random.default_rng(0)
    words = SPECIFIC + ["Mother", "Father", "MOTHER"] + NEUTRAL
    g = rng.standard_normal(24)
    V = rng.standard_normal((len(words), 24))
    for i, w in enumerate(words):  # plant a gender component
        sign = 1 if w.lower() in ("she", "woman", "her", "girl", "queen", "mother", "nurse", "teacher") else -1
        V[i] += 2 * sign * g
    return to_keyed_vectors(words, V)


def test_invariants(kv):
    hd = HardDebias(DEF, EQ, SPECIFIC).fit(kv)
    out = hd.transform(kv)
    g = hd.bias_direction_
    assert np.linalg.norm(g) == pytest.approx(1)
    V = out.vectors.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(V, axis=1), 1, atol=1e-6)
    for w in NEUTRAL:
        assert abs(out[w] @ g) < 1e-6
    for a, b in [("queen", "king"), ("Mother", "Father"), ("mother", "father")]:
        # symmetric about the neutral subspace: same neutral part, opposite bias components
        pa, pb = out[a] @ g, out[b] @ g
        assert pa == pytest.approx(-pb, abs=1e-6) and abs(pa) > 0.1
        np.testing.assert_allclose(out[a] - pa * g, out[b] - pb * g, atol=1e-6)
        for w in NEUTRAL:  # equidistant from every neutral word
            assert out[a] @ out[w] == pytest.approx(out[b] @ out[w], abs=1e-6)
    assert ("MOTHER", "FATHER") not in hd.equalized_pairs_  # FATHER missing from vocab
    assert direct_bias(out, g, NEUTRAL) < 1e-6 < direct_bias(kv, g, NEUTRAL)
    # gender-specific words not in an equalize pair keep their (normalised) vector
    np.testing.assert_allclose(out["she"], kv["she"] / np.linalg.norm(kv["she"]), atol=1e-6)


def test_array_interface_matches_keyedvectors(kv):
    words = list(kv.index_to_key)
    hd = HardDebias(DEF, EQ, SPECIFIC)
    np.testing.assert_allclose(hd.fit_transform(kv.vectors, words), hd.fit(kv).transform(kv).vectors, atol=1e-7)


def test_errors(kv, tmp_path):
    words = list(kv.index_to_key)
    with pytest.raises(DebiasInputError, match="at least 2"):
        HardDebias([("she", "he"), ("xx", "yy")], EQ, SPECIFIC).fit(kv)
    V = kv.vectors.copy()
    V[0, 3] = np.nan
    with pytest.raises(DebiasInputError, match="NaN"):
        HardDebias(DEF, EQ, SPECIFIC).fit(V, words)
    with pytest.raises(DebiasInputError, match="counts must match"):
        HardDebias(DEF, EQ, SPECIFIC).fit(kv.vectors, words[:-1])
    with pytest.raises(NotFittedError):
        HardDebias(DEF).transform(kv)
    hd = HardDebias(DEF, EQ, SPECIFIC).fit(kv)
    with pytest.raises(DebiasInputError, match="NaN"):
        hd.transform(V, words)
    with pytest.raises(DebiasInputError, match="dimension"):
        hd.transform(kv.vectors[:, :5], words)
    p = tmp_path / "pairs.json"
    p.write_text(json.dumps([["a", "b"], ["c"]]))
    with pytest.raises(DataFormatError, match="item 1"):
        read_pairs(p)


def test_real_word_lists_load():
    lists = load_word_lists()
    assert len(lists.definitional) == 10 and len(lists.equalize) == 52
    assert len(lists.gender_specific) == 1441 and len(lists.professions) == 320


def test_debias_cli(kv, tmp_path, capsys):
    from embedkit.cli.main import main

    src = tmp_path / "in.txt"
    kv.save_word2vec_format(str(src))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "definitional_pairs.json").write_text(json.dumps([list(p) for p in DEF]))
    (lists / "equalize_pairs.json").write_text(json.dumps([list(p) for p in EQ]))
    (lists / "gender_specific_full.json").write_text(json.dumps(SPECIFIC))
    (lists / "professions.json").write_text(json.dumps([[w, 0.0, 0.0] for w in NEUTRAL]))
    with pytest.raises(SystemExit) as ok:  # the console entry point exits with the command's status
        main(["debias", "--vectors", str(src), "--lists", str(lists), "--out", str(tmp_path / "out.txt"), "--json"])
    assert ok.value.code == 0
    s = json.loads(capsys.readouterr().out)
    assert s["direct_bias_after"] < 1e-6 < s["direct_bias_before"]
    (lists / "definitional_pairs.json").write_text(json.dumps([["she"]]))
    with pytest.raises(SystemExit) as e:
        main(["debias", "--vectors", str(src), "--lists", str(lists), "--out", str(tmp_path / "out2.txt")])
    assert e.value.code == 2 and "item 0" in capsys.readouterr().err


def test_fitted_direction_is_the_planted_one():
    """The PCA over definitional pairs must recover the planted gender direction (and orient it so that
    the pairs' first word — she, woman, ... — projects positively), not just any unit vector."""
    rng = np.random.default_rng(5)
    words = SPECIFIC + ["Mother", "Father"] + NEUTRAL
    g = rng.standard_normal(24)
    g /= np.linalg.norm(g)
    V = rng.standard_normal((len(words), 24)) * 0.3
    female = {"she", "woman", "her", "girl", "queen", "mother"}
    for i, w in enumerate(words):
        if w.lower() in female:
            V[i] += 1.5 * g
        elif w in SPECIFIC or w == "Father":
            V[i] -= 1.5 * g
    hd = HardDebias(DEF, EQ, SPECIFIC).fit(to_keyed_vectors(words, V))
    cos = float(hd.bias_direction_ @ g)
    assert cos > 0.95, cos
    # and a random direction would not pass: the test can fail
    other = rng.standard_normal(24)
    assert abs(float(other / np.linalg.norm(other) @ g)) < 0.95
