"""Keyword search over a disk index with several segments ranks as one index would (issue 29)."""

from __future__ import annotations

import numpy as np
import pytest

from embedkit import EmbeddingIndex
from embedkit.retrieval.keyword import query_phrases
from embedkit.retrieval.ondisk import DiskIndex

WORDS = ["cat", "dog", "bird", "fish", "horse", "mouse", "lion", "bear", "running", "runs"] + [f"w{j}" for j in range(50)]
P = 1.0 / np.arange(1, len(WORDS) + 1)  # Zipf-like: common and rare words, so idf and lengths matter
QUERIES = ["lion bear", "running cats", "river7 horse w3", "the dog met a fish w12", "unknownword", "foo_bar lion",
           "mouse mouse w40 cat", "w7 w8 w9 w30"]


def rand_unit(n, d=16, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(1)
    texts = []
    for i in range(300):  # varied lengths and term frequencies, so statistics matter
        size = 200 if i % 25 == 0 else int(rng.integers(3, 25))  # some over 127 tokens: 2-byte sizes in FTS5
        words = rng.choice(WORDS, size=size, p=P / P.sum()).tolist()
        texts.append(f"note {i} river{i % 40} " + " ".join(words) + (" foo_bar" if i % 17 == 0 else ""))
    meta = [{"year": 2000 + i % 10} for i in range(300)]
    return texts, [f"d{i}" for i in range(300)], meta, rand_unit(300)


def three_segments(corpus, tmp_path, removed=()):
    """A disk index whose documents sit in 3 segments (two saved, one unsaved), and an in-memory
    index over the same live documents in the same order."""
    texts, ids, meta, X = corpus
    cuts = [0, 170, 200, 300]  # unequal segments: per-segment statistics would differ a lot
    mem = EmbeddingIndex.build(texts[:170], ids[:170], meta[:170], embeddings=X[:170], show_progress=False)
    mem.save(tmp_path / "d", layout="disk")
    disk = EmbeddingIndex.load(tmp_path / "d")
    disk.add(texts[170:200], ids[170:200], meta[170:200], embeddings=X[170:200])
    disk.save(tmp_path / "d")
    disk = EmbeddingIndex.load(tmp_path / "d")
    disk.add(texts[200:], ids[200:], meta[200:], embeddings=X[200:])
    assert isinstance(disk, DiskIndex) and [s.count for s in disk._segments] == np.diff(cuts).tolist()
    if removed:
        disk.remove(list(removed))
    keep = [i for i in range(300) if ids[i] not in set(removed)]
    one = EmbeddingIndex.build([texts[i] for i in keep], [ids[i] for i in keep], [meta[i] for i in keep],
                               embeddings=X[keep], show_progress=False)
    return disk, one


def assert_same(disk, one, query, **kw):
    got = disk.search(query, k=300, mode="keyword", **kw)
    want = one.search(query, k=300, mode="keyword", **kw)
    assert [h.id for h in got] == [h.id for h in want], query
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=0, atol=1e-6)


def test_query_phrases_are_fts5_terms():
    assert query_phrases("Running cafés, foo_bar!") == [("run",), ("cafe",), ("foo", "bar")]
    assert query_phrases(" ?! ") == []


@pytest.mark.parametrize("removed", [(), ("d3", "d171", "d250", "d251", "d0")])
def test_three_segments_rank_and_score_as_one_index(corpus, tmp_path, removed):
    disk, one = three_segments(corpus, tmp_path, removed)
    for query in QUERIES:
        assert_same(disk, one, query)
    assert_same(disk, one, "lion bear", where={"year": {"$gte": 2005}})
    # and the top k is the top of the full ranking (k smaller than the matches)
    assert [h.id for h in disk.search("lion bear", k=7, mode="keyword")] == \
        [h.id for h in one.search("lion bear", k=7, mode="keyword")]
    disk.save(tmp_path / "d")  # the unsaved segment saved: the same once more, read from disk
    again = EmbeddingIndex.load(tmp_path / "d")
    assert_same(again, one, "running cats")
    q = rand_unit(1, seed=5)
    hybrid = again.search_ids(q, 10, mode="hybrid", texts=["running cats"])
    assert hybrid[1] == one.search_ids(q, 10, mode="hybrid", texts=["running cats"])[1]


def test_per_segment_statistics_would_rank_differently(corpus, tmp_path):
    """The case the index-wide statistics fix: each segment's own bm25() disagrees with one index."""
    disk, one = three_segments(corpus, tmp_path)
    local = sorted((h for s in disk._segments for h in s.keyword_search("lion bear", 300)), key=lambda h: -h[1])
    want = {h.id: h.score for h in one.search("lion bear", k=300, mode="keyword")}
    ids = disk._docs.ids_for_keys([k for k, _ in local])
    assert max(abs(want[ids[k]] - s) for k, s in local) > 1e-3
