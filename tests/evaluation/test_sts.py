import numpy as np
import pytest
from scipy.stats import spearmanr

from embedkit.data import StsDataset
from embedkit.errors import EmbedkitError
from embedkit.evaluation.sts import evaluate_sts, spearman_cosine


def test_spearman_cosine_known_values():
    e1 = np.array([[1.0, 0], [1, 0], [1, 0]])
    e2 = np.array([[1.0, 0], [1, 1], [0, 1]])  # cosines 1, 0.707, 0
    assert spearman_cosine(e1, e2, [5, 3, 1]) == pytest.approx(100.0)
    assert spearman_cosine(e1, e2, [1, 3, 5]) == pytest.approx(-100.0)
    with pytest.raises(EmbedkitError, match="mismatched sizes"):
        spearman_cosine(e1, e2[:2], [1, 2, 3])


def test_evaluate_sts_equals_direct_scipy(tiny_model, isolated_cache):
    ds = StsDataset("toy", [5.0, 1.0, 3.0, 4.0], ["a cat", "the dog", "stock price", "the king"],
                    ["a kitten", "money trade", "market rate", "the queen"])
    res = evaluate_sts(tiny_model, [ds])
    e1, e2 = tiny_model.encode(ds.sentences1), tiny_model.encode(ds.sentences2)
    cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    assert res["toy"] == pytest.approx(spearmanr(cos, ds.scores).statistic * 100, abs=1e-4)
    assert res["average"] == res["toy"]


@pytest.mark.slow
def test_default_model_on_real_stsb_subset(default_model, data_dir):
    from embedkit.data import read_sts_tsv

    full = read_sts_tsv(data_dir / "sts" / "stsb.test.tsv")
    sub = StsDataset("stsb-300", full.scores[:300], full.sentences1[:300], full.sentences2[:300])
    res = evaluate_sts(default_model, [sub])
    assert 75 < res["stsb-300"] < 95  # all-MiniLM-L6-v2 scores about 82 on the full STS-B test
