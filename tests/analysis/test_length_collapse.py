from __future__ import annotations

import numpy as np
import pytest
from tiny_models import tiny_bert_sentence_transformer

from embedkit.analysis import AnalysisInputError, length_collapse, mean_pairwise_cosine, search_temperature


def test_mean_pairwise_cosine_matches_loop():
    X = np.random.default_rng(0).standard_normal((30, 8))
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    want = np.mean([U[i] @ U[j] for i in range(30) for j in range(30) if i != j])
    assert mean_pairwise_cosine(X) == pytest.approx(want, rel=1e-10)


def test_collapse_detects_crowding_of_long_texts():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=400)
    common = rng.standard_normal(16)
    # longer -> closer to a shared direction
    X = rng.standard_normal((400, 16)) + (lengths[:, None] / 100) * common
    res = length_collapse(X, lengths, n_buckets=4)
    assert len(res.buckets) == 4 and res.collapse > 0.3
    assert res.buckets[-1]["rankme"] < res.buckets[0]["rankme"]


def test_errors():
    X = np.random.default_rng(0).standard_normal((40, 4))
    with pytest.raises(AnalysisInputError, match="counts must match"):
        length_collapse(X, np.arange(39))
    with pytest.raises(AnalysisInputError, match="varied length"):
        length_collapse(X, np.full(40, 7))


def test_search_temperature_restores_model(tmp_path):
    st = tiny_bert_sentence_transformer(tmp_path)
    texts = [" ".join(["the man is a doctor"] * k) for k in range(1, 9)] + ["she", "he", "news", "the film"] * 2
    before = st.encode(texts)
    res = search_temperature(st, texts, taus=(0.5, 0.8), min_agreement=0.0,
                             encode=lambda m, t: m.encode(list(t), convert_to_numpy=True))
    assert {r["tau"] for r in res["results"]} == {1.0, 0.5, 0.8}
    assert res["candidate_tau"] in (1.0, 0.5, 0.8) and res["best_tau"] in (1.0, res["candidate_tau"])
    assert res["results"][0]["agreement"] == pytest.approx(1.0)
    np.testing.assert_array_equal(st.encode(texts), before)


def _planted_encoder(texts, strength):
    """Embeddings whose long texts crowd towards one direction, less so at lower temperature.

    ``strength(tau)`` sets how strongly length pulls a text to the shared direction; the encoder reads
    the model's current temperature, as a real model's attention would change with it.
    """
    from embedkit.models.tempscale import tempscale_of

    rng = np.random.default_rng(1)
    base = rng.standard_normal((len(texts), 32))
    common = rng.standard_normal(32) * 3
    words = np.array([len(t.split()) for t in texts], dtype=float)

    def encode(m, t):
        pull = strength(tempscale_of(m)) * (words / words.max())[:, None]
        return base + pull * common
    return encode


def _varied_texts(n=60):
    rng = np.random.default_rng(2)
    return [" ".join(["word"] * int(k)) for k in rng.integers(1, 40, size=n)]


def test_planted_collapse_is_repaired_with_tau_below_one(tmp_path):
    st = tiny_bert_sentence_transformer(tmp_path)
    texts = _varied_texts()
    enc = _planted_encoder(texts, strength=lambda tau: 3.0 * tau ** 4)  # lower tau -> less crowding
    res = search_temperature(st, texts, taus=(0.95, 0.9, 0.8), min_agreement=0.5, encode=enc)
    assert res["repair"] is True, res["reason"]
    assert res["best_tau"] < 1.0
    assert res["gain"] > 0.01 and res["gain_support"] >= 0.95


def test_no_collapse_means_nothing_to_repair(tmp_path):
    st = tiny_bert_sentence_transformer(tmp_path)
    texts = _varied_texts()
    # length does not crowd texts at all; tau only adds a tiny, text-independent wobble
    enc0 = _planted_encoder(texts, strength=lambda tau: 0.0)

    def enc(m, t):
        from embedkit.models.tempscale import tempscale_of

        E = enc0(m, t)
        return E + 0.001 * (1 - tempscale_of(m)) * np.random.default_rng(3).standard_normal(E.shape)
    res = search_temperature(st, texts, taus=(0.95, 0.9), min_agreement=0.5, encode=enc)
    assert res["repair"] is False and res["best_tau"] == 1.0
    assert res["reason"].startswith("nothing to repair")
