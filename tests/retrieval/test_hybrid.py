"""Keyword (BM25) search, hybrid fusion and metadata filters (issue 29), on random embeddings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from embedkit import EmbeddingIndex
from embedkit.errors import EmbedkitError
from embedkit.retrieval.filters import parse_where
from embedkit.retrieval.hybrid import fuse
from embedkit.retrieval.keyword import match_expression

REPO = Path(__file__).resolve().parents[2]
N = 600
WORDS = ["cat", "dog", "bird", "fish", "horse", "mouse", "lion", "bear"]


def rand_unit(n, d=32, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def corpus():
    texts = [f"note {i}: the {WORDS[i % 8]} met a {WORDS[(i // 8) % 8]} near river{i % 50}" for i in range(N)]
    ids = [f"d{i}" for i in range(N)]
    meta = [{"year": 2000 + i % 25, "lang": ["en", "de", "fr", "it"][i % 4], "open": bool(i % 2),
             "score": (i % 10) / 10, "src": {"site": "arxiv" if i % 3 == 0 else "pubmed"}} for i in range(N)]
    return texts, ids, meta, rand_unit(N)


def build(corpus, **kw):
    texts, ids, meta, X = corpus
    return EmbeddingIndex.build(texts, ids, meta, embeddings=X, show_progress=False, **kw)


def fts_rows(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM docs_fts_docsize").fetchone()[0]


# -- keyword ---------------------------------------------------------------------------------------
def test_match_expression_quotes_words_so_fts_syntax_cannot_be_injected():
    assert match_expression('lion" OR NEAR(x) * -- ;DROP') == '"lion" OR "or" OR "near" OR "x" OR "drop"'
    assert match_expression("  ?! ") is None


def test_keyword_search_ranks_by_bm25_and_stays_in_step_with_add_and_remove(corpus):
    idx = build(corpus)
    hits = idx.search("river7", k=20, mode="keyword")
    assert {h.id for h in hits} == {f"d{i}" for i in range(7, N, 50)}
    assert hits[0].score > 0 and all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    idx.remove(["d7", "d57"])
    assert {h.id for h in idx.search("river7", k=20, mode="keyword")} == {f"d{i}" for i in range(107, N, 50)}
    idx.add(["a unicorn story"], ["u1"], embeddings=rand_unit(1, seed=9))
    assert [h.id for h in idx.search("unicorns", k=3, mode="keyword")] == ["u1"]  # porter stemming
    assert fts_rows(idx._docs.conn) == len(idx) == N - 1


def test_a_failed_add_leaves_no_keyword_rows(corpus, monkeypatch):
    idx = build(corpus)
    code_index = idx._code_index
    monkeypatch.setattr(code_index, "add", lambda X: (_ for _ in ()).throw(RuntimeError("faiss failed")))
    with pytest.raises(RuntimeError):
        idx.add(["zebra text"], ["z1"], embeddings=rand_unit(1, seed=3))
    assert idx.search("zebra", k=3, mode="keyword") == []
    assert fts_rows(idx._docs.conn) == len(idx) == N


@pytest.mark.parametrize("layout", ["memory", "disk"])
def test_keyword_index_saved_loaded_and_recorded_in_the_manifest(corpus, tmp_path, layout):
    idx = build(corpus)
    idx.save(tmp_path / "i", layout=layout)
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert manifest["keyword"] is True
    loaded = EmbeddingIndex.load(tmp_path / "i")
    want = [h.id for h in idx.search("lion bear", k=10, mode="keyword")]
    assert [h.id for h in loaded.search("lion bear", k=10, mode="keyword")] == want
    if layout == "disk":  # an added segment and tombstones take part too
        loaded.add(["lion bear lion bear"], ["new"], embeddings=rand_unit(1, seed=4))
        loaded.remove([want[0]])
        got = [h.id for h in loaded.search("lion bear", k=N, mode="keyword")]
        assert "new" in got and want[0] not in got  # (a one-document segment scores with its own statistics)
        loaded.save(tmp_path / "i")
        again = EmbeddingIndex.load(tmp_path / "i")
        assert [h.id for h in again.search("lion bear", k=N, mode="keyword")] == got


def test_an_index_without_keyword_index_loads_and_refuses_keyword_mode(corpus, tmp_path):
    build(corpus, keyword=False).save(tmp_path / "old")
    m = json.loads((tmp_path / "old" / "manifest.json").read_text())
    assert m["keyword"] is False
    old = EmbeddingIndex.load(tmp_path / "old")
    assert len(old.search(corpus[3][:1], k=3)[0]) == 3
    for mode in ("keyword", "hybrid"):
        with pytest.raises(EmbedkitError, match=rf"^mode='{mode}' needs a keyword index, and this index has none"):
            old.search_ids(corpus[3][:1], 3, mode=mode, texts=["cat"])


def test_kill_during_an_incremental_save_keeps_keyword_and_vector_sides_equal(corpus, tmp_path):
    build(corpus).save(tmp_path / "idx", layout="disk")
    folder, ready = tmp_path / "idx", tmp_path / "ready"
    np.save(tmp_path / "v.npy", rand_unit(3, seed=5))
    script = f"""
        import time, pathlib, numpy as np
        import embedkit.retrieval.ondisk as od
        from embedkit import EmbeddingIndex
        def slow(*a, **k):
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(60)
        od.write_manifest = slow
        idx = EmbeddingIndex.load({str(folder)!r})
        idx.add(["okapi one", "okapi two", "okapi three"], ["n0", "n1", "n2"], embeddings=np.load({str(tmp_path / 'v.npy')!r}))
        idx.save({str(folder)!r})
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    old = EmbeddingIndex.load(folder, verify="full")
    assert len(old) == N and old.search("okapi", k=5, mode="keyword") == []
    assert sum(fts_rows(s.conn) for s in old._segments) == len(old)


# -- fusion ------------------------------------------------------------------------------------------
def test_rrf_and_weighted_fusion():
    assert fuse([(1, .9), (2, .8)], [(2, 7.0), (3, 5.0)], 3) == [(2, 1 / 62 + 1 / 61), (1, 1 / 61), (3, 1 / 62)]
    got = fuse([(1, .9), (2, .5)], [(2, 7.0), (3, 5.0)], 3, fusion="weighted", alpha=0.25)
    assert got == [(2, 0.75), (1, 0.25)] + [(3, 0.0)]


def test_hybrid_search_fuses_both_sides_and_checks_its_arguments(corpus):
    idx = build(corpus)
    texts, ids, meta, X = corpus
    hits = idx.search_ids(X[5:6], 5, mode="hybrid", texts=["river5 horse"])[1][0]
    assert hits[0] == "d5"  # first in both lists
    with pytest.raises(EmbedkitError, match=r"^unknown search mode 'bm25'; choose one of dense, keyword, hybrid$"):
        idx.search("x", mode="bm25")
    with pytest.raises(EmbedkitError, match=r"^alpha must be a number from 0 to 1"):
        idx.search("x", mode="hybrid", fusion="weighted", alpha=2)


# -- filters -----------------------------------------------------------------------------------------
FIELDS = {"year": {"integer"}, "lang": {"text"}, "open": {"true", "false"}, "score": {"real", "integer"},
          "src": {"object"}, "src.site": {"text"}}


@pytest.mark.parametrize("where, message", [
    ({"yeer": 2020}, "where: unknown field 'yeer' (metadata fields: lang, open, score, src, src.site, year)"),
    ({"year": "2020"}, "where: field 'year' holds number values; $eq got the string \"2020\""),
    ({"lang": {"$in": ["en", 3]}}, "where: field 'lang' holds string values; $in got the number 3"),
    ({"year'; DROP TABLE docs; --": 1}, "where: \"year'; DROP TABLE docs; --\" is not a field name (letters, digits "
                                        "and _, dots between parts)"),
    ({"year": {"$regex": ".*"}}, "where: unknown operator '$regex' on 'year' (use $eq, $ne, $gt, $gte, $lt, $lte, "
                                 "$in, $nin, $exists)"),
    ({"$where": "1=1"}, "where: unknown operator '$where' at the top of a condition (use $and, $or or a field name)"),
    ("{year: 2020", "where: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
                    "(char 1)); e.g. '{\"year\": {\"$gte\": 2020}}'"),
    ({"open": {"$gt": True}}, "where: $gt on 'open' needs a number or a string, not true"),
    ({"year": None}, "where: null is not a string, number or boolean"),
    ({"$or": []}, "where: $or takes a non-empty list of filters"),
])
def test_bad_filters_are_one_line_errors(where, message):
    with pytest.raises(EmbedkitError) as e:
        parse_where(where, FIELDS)
    assert str(e.value) == message


def test_filter_sql_holds_no_user_text():
    f = parse_where({"lang": "x' OR 1=1 --", "year": {"$gte": 2020}}, FIELDS)
    assert "OR 1=1" not in f.sql and "2020" not in f.sql and "lang" not in f.sql
    assert f.params == ("$.lang", "x' OR 1=1 --", "$.lang", "$.year", 2020, "$.year")


def allowed_ids(meta, ids, pred):
    return [i for i, m in zip(ids, meta) if pred(m)]


FILTERS = [
    ({"year": {"$gte": 2010, "$lt": 2020}, "lang": {"$in": ["en", "de"]}},
     lambda m: 2010 <= m["year"] < 2020 and m["lang"] in ("en", "de")),
    ({"$or": [{"open": True}, {"src.site": "arxiv"}], "score": {"$lte": 0.3}},
     lambda m: (m["open"] or m["src"]["site"] == "arxiv") and m["score"] <= 0.3),
    ({"lang": {"$nin": ["en"]}, "year": 2003}, lambda m: m["lang"] != "en" and m["year"] == 2003),
    ({"lang": {"$ne": "fr"}, "missing_ok": {"$exists": False}}, lambda m: m["lang"] != "fr"),
]


@pytest.mark.parametrize("layout", ["memory", "disk"])
@pytest.mark.parametrize("spec", ["float", "binary"])
def test_filtered_flat_search_equals_brute_force_over_the_subset(corpus, tmp_path, layout, spec):
    texts, ids, meta, X = corpus
    idx = build(corpus, spec=spec)
    if layout == "disk":
        idx.save(tmp_path / "d", layout="disk")
        idx = EmbeddingIndex.load(tmp_path / "d")
    full = build(corpus, spec=spec)
    Q = rand_unit(5, seed=11)
    for where, pred in FILTERS[:3] + [({"lang": {"$ne": "fr"}}, FILTERS[3][1])]:
        subset = set(allowed_ids(meta, ids, pred))
        _, got = idx.search_ids(Q, 10, where=where)
        s_all, all_ids = full.search_ids(Q, N)
        for q in range(len(Q)):
            want = [d for d in all_ids[q] if d in subset][:10]
            assert got[q] == want, where


def test_filtered_keyword_search_and_unknown_field_error(corpus):
    texts, ids, meta, X = corpus
    idx = build(corpus)
    hits = idx.search("river7", k=20, mode="keyword", where={"lang": "it"})
    assert {h.id for h in hits} == {f"d{i}" for i in range(7, N, 50) if i % 4 == 3}
    with pytest.raises(EmbedkitError, match=r"^where: unknown field 'colour'"):
        idx.search_ids(X[:1], 20, mode="hybrid", texts=["river7"], where={"colour": "red"})
    assert idx.search_ids(X[:1], 10, mode="hybrid", texts=["river7"], where={"year": 1990})[1] == [[]]


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
@pytest.mark.parametrize("spec", ["float", "binary"])
def test_filtered_ivf_and_hnsw_recall_at_low_selectivity(corpus, index_type, spec):
    texts, ids, meta, X = corpus
    idx = build(corpus, spec=spec, index_type=index_type, nlist=16 if index_type == "ivf" else None)
    exact = build(corpus, spec=spec)
    Q = rand_unit(20, seed=12)
    where = {"year": 2003, "lang": "de"}  # 1 in 100 documents (0.17%... 6 of 600)
    _, got = idx.search_ids(Q, 5, where=where)
    _, want = exact.search_ids(Q, 5, where=where)
    recall = np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want)])
    assert recall >= 0.95
