"""`embedkit index search --mode/--where` and `index eval --mode` (issue 29), without loading a model."""

from __future__ import annotations

import json

import numpy as np


def _index(path, keyword=True):
    from embedkit import EmbeddingIndex

    texts = ["vitamin d and bone density", "solar panels on roofs", "bone fractures in the elderly", "tax law"]
    meta = [{"year": 2019}, {"year": 2021}, {"year": 2022}, {"year": 2020}]
    X = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    EmbeddingIndex.build(texts, ["a", "b", "c", "d"], meta, embeddings=X, show_progress=False,
                         keyword=keyword).save(path)
    return path


def test_keyword_search_with_a_filter(tmp_path, invoke, no_model):
    idx = _index(tmp_path / "i")
    res = invoke("index", "search", idx, "bone", "--mode", "keyword", "--json")
    assert res.code == 0, res.stderr
    assert [h["id"] for h in json.loads(res.stdout)["hits"]] in (["a", "c"], ["c", "a"])
    res = invoke("index", "search", idx, "bone", "--mode", "keyword", "--where", '{"year": {"$gte": 2021}}', "--json")
    body = json.loads(res.stdout)
    assert [h["id"] for h in body["hits"]] == ["c"] and body["mode"] == "keyword"


def test_bad_where_and_missing_keyword_index_are_one_line_errors(tmp_path, invoke, no_model):
    idx = _index(tmp_path / "i")
    invoke("index", "search", idx, "bone", "--mode", "keyword", "--where", "{year").one_line_error(
        "--where {year: not valid JSON")
    invoke("index", "search", idx, "bone", "--mode", "keyword", "--where", '{"yr": 1}').one_line_error(
        "where: unknown field 'yr' (metadata fields: year)")
    invoke("index", "search", idx, "bone", "--mode", "keyword", "--where", '{"year": "2020"}').one_line_error(
        "where: field 'year' holds number values; $eq got the string \"2020\"")
    old = _index(tmp_path / "old", keyword=False)
    invoke("index", "search", old, "bone", "--mode", "keyword").one_line_error(
        "mode='keyword' needs a keyword index, and this index has none")
