"""/api/search?mode= and where= (issue 29): keyword and hybrid search, metadata filters, 4xx on bad filters."""

from __future__ import annotations

import json

from serve_helpers import DOCS


def test_get_search_keyword_mode_and_filter(client):
    r = client.get("/api/search", params={"q": "kitten", "mode": "keyword", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "keyword"
    assert [h["id"] for h in body["hits"]] == [d[0] for d in DOCS if "kitten" in d[1].lower()][:3]
    pets = {d[0] for d in DOCS if (d[2] or {}).get("kind") == "pet"}
    r = client.get("/api/search", params={"q": "the cat", "mode": "hybrid", "k": 20,
                                          "where": json.dumps({"kind": "pet"})})
    assert r.status_code == 200, r.text
    assert {h["id"] for h in r.json()["hits"]} <= pets and r.json()["hits"]


def test_post_search_with_where_and_bad_filters_are_422(client):
    r = client.post("/api/search", json={"queries": ["the cat"], "k": 5, "where": {"legs": {"$gte": 4}}})
    assert r.status_code == 200, r.text
    assert all(h["metadata"]["legs"] >= 4 for h in r.json()["results"][0]["hits"])
    bad = client.post("/api/search", json={"queries": ["x"], "where": {"legs": "four"}})
    assert bad.status_code == 422
    assert bad.json()["error"] == {"code": "invalid_filter",
                                   "message": "where: field 'legs' holds number values; $eq got the string \"four\""}
    inj = client.get("/api/search", params={"q": "x", "where": json.dumps({"kind'); DROP TABLE docs;--": 1})})
    assert inj.status_code == 422 and inj.json()["error"]["code"] == "invalid_filter"
    assert client.get("/api/search", params={"q": "x", "where": "{nope"}).status_code == 422
    assert client.get("/api/search", params={"q": "x", "mode": "bm25"}).status_code == 422
