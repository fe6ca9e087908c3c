from __future__ import annotations

import os

import numpy as np
import pytest
from scipy.stats import spearmanr

from embedkit.analysis import AnalysisInputError, fisher_ratio, h0_persistence, separability


def _prim_reference(X):
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial.distance import cdist

    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return np.sort(minimum_spanning_tree(cdist(X, X)).data)


def test_h0_equals_mst_edges():
    X = np.random.default_rng(0).standard_normal((200, 16))
    np.testing.assert_allclose(h0_persistence(X), _prim_reference(X), rtol=1e-9)


def test_duplicates_give_zero_persistence():
    X = np.repeat(np.random.default_rng(0).standard_normal((5, 8)), 4, axis=0)
    p = h0_persistence(X)
    assert len(p) == 19 and (p[:15] < 1e-6).all()


def test_synthetic_growing_separation_agrees_with_fisher():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((5, 48))
    y = np.repeat(np.arange(5), 120)
    ph, fr = [], []
    for noise in [0.2, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0]:
        X = centers[y] + rng.standard_normal((len(y), 48)) * noise
        ph.append(separability(X).separability)
        fr.append(fisher_ratio(X, y))
    assert spearmanr(ph, fr).statistic >= 0.8


def test_fixed_noise_score_follows_class_structure():
    """Noise held fixed; only the class structure changes (how far apart the class centres are).
    The label-free score must rank the datasets as the labelled Fisher ratio does, and a set with
    no class structure (all centres equal) must score lowest."""
    rng = np.random.default_rng(1)
    directions = rng.standard_normal((5, 48))
    y = np.repeat(np.arange(5), 120)
    noise = rng.standard_normal((len(y), 48)) * 0.5  # the same noise for every dataset
    scores, fishers = [], []
    for spread in [0.0, 0.1, 0.2, 0.35, 0.6, 1.0]:
        X = directions[y] * spread + noise
        scores.append(separability(X).separability)
        fishers.append(fisher_ratio(X, y))
    assert spearmanr(scores, fishers).statistic >= 0.9
    assert scores[0] == min(scores) and scores[-1] == max(scores)
    assert scores[-1] > 1.5 * scores[0]


@pytest.mark.slow
def test_real_topics_two_encoders_growing_noise_agree_with_fisher():
    """AG News (real, 4 topics), default model and a bag-of-input-embeddings encoder, growing noise."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from embedkit import load_encoder
    from embedkit._io import data_dir
    from embedkit.cache import encode_cached
    from embedkit.data import read_labelled_tsv

    labels, texts = read_labelled_tsv(data_dir() / "topics" / "ag_news" / "test.tsv")
    idx = np.random.default_rng(0).permutation(len(texts))[:400]
    labels, texts = [labels[i] for i in idx], [texts[i] for i in idx]
    model = load_encoder()
    E_model = encode_cached(model, texts, show_progress=False)
    emb = model[0].auto_model.get_input_embeddings().weight.detach().numpy()
    ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    E_bag = np.stack([emb[i].mean(axis=0) for i in ids])
    rng = np.random.default_rng(1)
    ph, fr = [], []
    for E in (E_model, E_bag):
        E = E / np.linalg.norm(E, axis=1, keepdims=True)
        scale = E.std()
        for noise in (0.0, 0.5, 1.0, 2.0, 4.0):
            X = E + rng.standard_normal(E.shape) * noise * scale
            ph.append(separability(X).separability)
            fr.append(fisher_ratio(X, labels))
    rho = spearmanr(ph, fr).statistic
    assert rho >= 0.8, (rho, ph, fr)


def test_errors():
    X = np.random.default_rng(0).standard_normal((10, 4))
    with pytest.raises(AnalysisInputError, match="counts must match"):
        fisher_ratio(X, [0, 1] * 4)
    with pytest.raises(AnalysisInputError, match="at least 3"):
        separability(X[:2])
    X[3, 1] = np.nan
    with pytest.raises(AnalysisInputError, match="NaN"):
        separability(X)
    with pytest.raises(AnalysisInputError, match="distinct label"):
        fisher_ratio(np.ones((4, 2)), ["a"] * 4)
