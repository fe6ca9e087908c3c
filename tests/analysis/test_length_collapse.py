from __future__ import annotations

import numpy as np
import pytest

from embedkit.analysis import AnalysisInputError, length_collapse, mean_pairwise_cosine, search_temperature
from tiny_models import tiny_bert_sentence_transformer


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
    assert res["best_tau"] in (1.0, 0.5, 0.8)
    assert res["results"][0]["agreement"] == pytest.approx(1.0)
    np.testing.assert_array_equal(st.encode(texts), before)
