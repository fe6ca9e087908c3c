from __future__ import annotations

import pytest

from embedkit.errors import DataFormatError, EmbedkitError
from embedkit.testing import make_tiny_model
from embedkit.training.mining import mine_hard_negatives, percpos_filter, write_triplets


def test_percpos_drops_exactly_the_candidates_above_the_threshold():
    ids = ["p", "a", "b", "c", "d", "e"]
    scores = [0.99, 0.97, 0.951, 0.95, 0.60, 0.10]
    kept, kept_s, dropped = percpos_filter(ids, scores, 1.0, positives={"p"}, max_positive_ratio=0.95, num_negatives=3)
    assert kept == ["c", "d", "e"] and kept_s == [0.95, 0.60, 0.10]  # 0.95 is not above 0.95: kept
    assert dropped == 2  # a, b; the positive p is excluded but not counted
    kept, _, _ = percpos_filter(ids, scores, 0.5, positives={"p"}, max_positive_ratio=0.95, num_negatives=3)
    assert kept == ["e"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from embedkit.models.loading import load_encoder

    return load_encoder(make_tiny_model(tmp_path_factory.mktemp("mine") / "m"), device="cpu")


CORPUS = {f"d{i}": t for i, t in enumerate([
    "the cat is a pet", "a kitten is a small cat", "dogs and puppies play ball", "the stock market fell",
    "bank rate and money", "python code has a bug", "search the index with a query vector", "the horse runs fast",
    "fish and birds are animals", "the company profit rose", "a cow eats food", "the king and the queen"])}


def test_mining_respects_positives_and_threshold(tiny):
    pairs = [("cat pet kitten", "d0"), ("cat pet kitten", "d1"), ("stock market money", "d3")]
    mined = mine_hard_negatives(pairs, list(CORPUS), list(CORPUS.values()), tiny, num_negatives=3, candidates=12)
    for q, p, negs, ns, ps in zip(mined.queries, mined.positive_ids, mined.negative_ids, mined.negative_scores,
                                  mined.positive_scores):
        assert p not in negs and not ({"d0", "d1"} & set(negs) if q.startswith("cat") else False)
        assert all(s <= 0.95 * ps + 1e-6 for s in ns)
        assert ns == sorted(ns, reverse=True)
    assert mined.stats["pairs"] == 3


def test_unknown_positive_id_is_refused(tiny):
    with pytest.raises(EmbedkitError, match="'nope' is not in the corpus"):
        mine_hard_negatives([("q", "nope")], list(CORPUS), list(CORPUS.values()), tiny)


def test_triplets_file_reads_back(tiny, tmp_path):
    from embedkit.data import read_text_pairs

    mined = mine_hard_negatives([("cat pet", "d0"), ("bank money", "d4")], list(CORPUS), list(CORPUS.values()), tiny,
                                num_negatives=2, max_positive_ratio=1.0)
    path = write_triplets(tmp_path / "t.tsv", mined, CORPUS)
    rows = read_text_pairs(path)
    assert len(rows) == 2 and all(len(r) == 4 for r in rows)
    assert rows[0][1] == CORPUS["d0"]


def test_pairs_file_errors(tmp_path):
    from embedkit.data import read_retrieval_pairs, read_text_pairs

    p = tmp_path / "pairs.tsv"
    p.write_text("query\tdoc\nwhat\td1\nwho\tmissing\n")
    with pytest.raises(DataFormatError, match=r"pairs.tsv:3: positive document id 'missing' is not in the corpus"):
        read_retrieval_pairs(p, doc_ids={"d1"})
    p.write_text("anchor\tpositive\na\tb\nonly one\n")
    with pytest.raises(DataFormatError, match=r"pairs.tsv:3: 1 tab-separated field"):
        read_text_pairs(p)


# --- issue 27: one score scale, the weakest positive, a sign-correct rule -------------------------------


def test_binary_candidates_are_scored_on_the_positives_float_scale(tiny):
    """``spec='binary'`` only finds the candidates: every score (and so the 95% rule) is the float cosine,
    so over the whole corpus binary and float mine the same negatives with the same scores."""
    import numpy as np

    pairs = [("cat pet kitten", "d0"), ("stock market money", "d3"), ("python code bug", "d5"), ("horse runs", "d7")]
    ids, texts = list(CORPUS), list(CORPUS.values())
    kw = dict(num_negatives=4, candidates=len(ids))
    fl = mine_hard_negatives(pairs, ids, texts, tiny, spec="float", **kw)
    bi = mine_hard_negatives(pairs, ids, texts, tiny, spec="binary", **kw)
    assert bi.negative_ids == fl.negative_ids
    np.testing.assert_allclose(sum(bi.negative_scores, []), sum(fl.negative_scores, []), atol=1e-5)
    assert bi.stats["dropped_as_near_positive"] == fl.stats["dropped_as_near_positive"]
    E = tiny.encode(texts, normalize_embeddings=True)
    for (q, _), negs, ns in zip(pairs, bi.negative_ids, bi.negative_scores):
        qv = tiny.encode([q], normalize_embeddings=True)[0]
        np.testing.assert_allclose(ns, [float(qv @ E[ids.index(d)]) for d in negs], atol=1e-5)


@pytest.fixture
def fixed_vectors(monkeypatch):
    """Replace the encoder by a table text -> vector (exact, known cosines)."""
    import numpy as np

    def install(table: dict):
        def encode(model, texts, **kw):
            return np.stack([np.asarray(table[t], dtype=np.float32) for t in texts])

        monkeypatch.setattr("embedkit.cache.encode_cached", encode)

    return install


def _at(cos: float, axis: int = 1, dim: int = 8):
    """A unit vector whose cosine with e0 is ``cos`` (the rest along ``axis``)."""
    import math

    v = [0.0] * dim
    v[0], v[axis] = cos, math.sqrt(1 - cos * cos)
    return v


def test_every_pair_of_a_query_is_thresholded_on_its_weakest_positive(fixed_vectors):
    """Positives p1 (0.9) and p2 (0.5): n1 (0.7) outscores the labelled positive p2, so it is a negative
    for neither pair (sentence-transformers' rule: the minimum positive score of the query)."""
    table = {"q": _at(1.0), "p1": _at(0.9, 1), "p2": _at(0.5, 2), "n1": _at(0.7, 3), "n2": _at(0.3, 4),
             "n3": _at(0.1, 5)}
    fixed_vectors(table)
    ids = ["p1", "p2", "n1", "n2", "n3"]
    mined = mine_hard_negatives([("q", "p1"), ("q", "p2")], ids, ids, object(), num_negatives=2, candidates=5)
    assert mined.negative_ids == [["n2", "n3"], ["n2", "n3"]]
    assert mined.positive_scores == pytest.approx([0.9, 0.5])
    assert mined.thresholds == pytest.approx([0.475, 0.475])
    assert mined.stats["dropped_as_near_positive"] == 2  # n1, once per pair


def test_the_rule_keeps_its_sense_for_a_negative_positive_score():
    """Positive at -0.2, ratio 0.95: the threshold is -0.2 - 0.05 x 0.2 = -0.21 (not 0.95 x -0.2 = -0.19,
    which would keep candidates scoring above the positive)."""
    from embedkit.training.mining import percpos_threshold

    assert percpos_threshold(-0.2, 0.95) == pytest.approx(-0.21)
    assert percpos_threshold(0.8, 0.95) == 0.95 * 0.8 and percpos_threshold(0.0, 0.95) == 0.0
    ids = ["above", "within", "below"]
    kept, _, dropped = percpos_filter(ids, [-0.195, -0.205, -0.5], -0.2, positives=set(), max_positive_ratio=0.95,
                                      num_negatives=3)
    assert kept == ["below"] and dropped == 2


def test_a_document_identical_to_the_query_is_never_its_negative(fixed_vectors):
    """STS pools (`sts_pairs`) hold the query's own sentence: it is excluded like a positive, not dropped."""
    fixed_vectors({"q": _at(1.0), "p1": _at(0.9, 1), "n2": _at(0.3, 4), "n3": _at(0.1, 5)})
    mined = mine_hard_negatives([("q", "p1")], ["p1", "dq", "n2", "n3"], ["p1", "q", "n2", "n3"], object(),
                                num_negatives=2, candidates=4)
    assert mined.negative_ids == [["n2", "n3"]] and mined.stats["dropped_as_near_positive"] == 0


def test_sts_pairs_both_directions_from_the_files_sentences(tmp_path):
    from embedkit.training.mining import sts_pairs

    p = tmp_path / "s.tsv"
    p.write_text("score\tsentence1\tsentence2\n4.5\ta  cat\ta kitten\n3.9\tthe dog\ta puppy\n4.0\tbank\tmoney\n")
    pairs, ids, texts = sts_pairs(p, 4.0)
    doc = dict(zip(ids, texts))
    assert [(q, doc[d]) for q, d in pairs] == [("a cat", "a kitten"), ("a kitten", "a cat"), ("bank", "money"),
                                               ("money", "bank")]
    assert texts == ["a cat", "the dog", "bank", "a kitten", "a puppy", "money"]
    with pytest.raises(EmbedkitError, match="s.tsv: no pair scores 5 or more; lower the minimum score"):
        sts_pairs(p, 5.0)
