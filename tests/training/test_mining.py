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
