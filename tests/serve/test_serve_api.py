"""The JSON API through FastAPI's TestClient: every endpoint, auth, every limit, errors."""

from __future__ import annotations

import json

import pytest
from serve_helpers import AUTH, DOCS, TOKEN

# --- search ------------------------------------------------------------------------------------------


def test_get_search_returns_hits_with_text_and_metadata(client):
    r = client.get("/api/search", params={"q": "the cat and the kitten sleep", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "the cat and the kitten sleep" and body["k"] == 3
    assert len(body["hits"]) == 3
    top = body["hits"][0]
    assert top == {"id": "cat", "score": pytest.approx(top["score"]), "text": DOCS[0][1], "metadata": {"kind": "pet", "legs": 4}}
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert body["took_ms"] > 0


def test_get_search_default_k_and_rescore_off(client):
    r = client.get("/api/search", params={"q": "money in the bank"})
    assert r.status_code == 200 and len(r.json()["hits"]) == 10
    r2 = client.get("/api/search", params={"q": "money in the bank", "rescore": "false", "k": 12})
    assert r2.status_code == 200 and len(r2.json()["hits"]) == 12


def test_post_search_several_queries_match_single_searches(client):
    queries = ["python code with a loop and a function", "the king and the queen"]
    r = client.post("/api/search", json={"queries": queries, "k": 2})
    assert r.status_code == 200
    body = r.json()
    assert [res["query"] for res in body["results"]] == queries
    assert [res["hits"][0]["id"] for res in body["results"]] == ["python", "king"]
    for q, res in zip(queries, body["results"]):
        single = client.get("/api/search", params={"q": q, "k": 2}).json()["hits"]
        assert [h["id"] for h in single] == [h["id"] for h in res["hits"]]


def test_search_results_equal_the_index_search(client):
    index = client.service.index
    expected = [(h.id, h.score) for h in index.search("a bug in the test", k=5)]
    got = [(h["id"], h["score"]) for h in client.get("/api/search", params={"q": "a bug in the test", "k": 5}).json()["hits"]]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], abs=1e-5)


@pytest.mark.parametrize("params, code", [
    ({"q": "   "}, "empty_query"),
    ({"q": "cat", "k": 0}, "invalid_k"),
    ({"q": "cat", "k": "2.7"}, "invalid_request"),
    ({"q": "cat", "k": "ten"}, "invalid_request"),
    ({}, "invalid_request"),
])
def test_get_search_bad_parameters(client, params, code):
    r = client.get("/api/search", params=params)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize("body, code", [
    ({"queries": []}, "no_queries"),
    ({"queries": "cat"}, "invalid_request"),
    ({"queries": ["cat"], "k": 2.7}, "invalid_request"),
    ({"queries": ["cat"], "k": True}, "invalid_request"),
    ({"queries": ["cat"], "k": "3"}, "invalid_request"),
    ({"queries": ["cat"], "querys": 1}, "invalid_request"),
    ({"queries": [1]}, "invalid_request"),
    ({"queries": [""]}, "empty_query"),
])
def test_post_search_bad_bodies(client, body, code):
    r = client.post("/api/search", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


def test_malformed_json_is_400_with_position(client):
    r = client.post("/api/search", content=b'{"queries": ["cat"', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "malformed_json" and "position" in err["message"]
    r = client.post("/api/documents", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"


_DOC = b'{"documents": [{"id": "a", "text": "the cat", "metadata": {"v": 1}}]}'


@pytest.mark.parametrize("path, body, field, message", [
    ("/api/documents", _DOC.replace(b"1}", b"NaN}"), "documents[0].metadata.v",
     "NaN is not a JSON number; send a finite number (or null)"),
    ("/api/documents", _DOC.replace(b"1}", b"Infinity}"), "documents[0].metadata.v",
     "Infinity is not a JSON number; send a finite number (or null)"),
    ("/api/documents", _DOC.replace(b"1}", b"-Infinity}"), "documents[0].metadata.v",
     "-Infinity is not a JSON number; send a finite number (or null)"),
    ("/api/documents", _DOC.replace(b"1}", b"1e999}"), "documents[0].metadata.v",
     "1e999 is out of range for a 64-bit float; send a finite number"),
    ("/api/documents", _DOC.replace(b"1}", b"9" * 5000 + b"}"), "documents[0].metadata.v",
     "a whole number of 5000 digits is too long (at most 4300 digits)"),
    ("/api/documents", _DOC.replace(b'"a"', b'"a\\ud800"'), "documents[0].id",
     "contains a lone surrogate (U+D800 at character 1); send valid Unicode text"),
    ("/api/documents", _DOC.replace(b"the cat", b"the \\udfffcat"), "documents[0].text",
     "contains a lone surrogate (U+DFFF at character 4); send valid Unicode text"),
    ("/api/documents", _DOC.replace(b'"v"', b'"\\ud800"'), 'documents[0].metadata["\\ud800"]',
     "the key contains a lone surrogate (U+D800 at character 0); send valid Unicode text"),
    ("/api/search", b'{"queries": ["cat", "\\ud800"]}', "queries[1]",
     "contains a lone surrogate (U+D800 at character 0); send valid Unicode text"),
    ("/api/search", b'{"queries": ["cat"], "k": NaN}', "k", "NaN is not a JSON number; send a finite number (or null)"),
])
def test_values_json_cannot_carry_are_422_naming_the_field(client, path, body, field, message):
    r = client.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == {"code": "invalid_request", "message": f"{field}: {message}", "fields": [field]}
    assert client.service.log.records == 0
    assert client.get("/api/health").json()["documents"] == len(DOCS)


def test_the_service_refuses_such_values_from_python_callers_too(client):
    from embedkit.errors import EmbedkitError

    svc = client.service
    with pytest.raises(EmbedkitError, match=r"^documents\[0\]\.metadata\.x\[1\]: nan is not a JSON number"):
        svc.add_documents(["a"], ["the cat"], [{"x": [1, float("nan")]}])
    with pytest.raises(EmbedkitError, match=r"^documents\[1\]\.text: contains a lone surrogate \(U\+D800"):
        svc.add_documents(["a", "b"], ["the cat", "the \ud800 dog"], [None, None])
    assert svc.log.records == 0


@pytest.mark.parametrize("body, message", [
    (b'{"queries": ["caf\xe9"]}', "the request body is not UTF-8 (byte 17: invalid continuation byte); send JSON "
                                  "encoded as UTF-8"),
    (b'{"queries": ["cat"], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "the request body nests deeper than 64 levels"),
    (b'{"queries": ["cat"], "x": ' + b"[" * 64 + b"]" * 64 + b"}", "the request body nests deeper than 64 levels (at x"),
    (b"\xef\xbb\xbf{}", "the request body is not valid JSON (Unexpected UTF-8 BOM (decode using utf-8-sig) at position 0)"),
])
def test_bodies_not_utf8_or_nested_too_deeply_are_malformed_json(client, body, message):
    r = client.post("/api/search", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "malformed_json" and err["message"].startswith(message), err


def test_brackets_inside_strings_are_not_nesting(client):
    q = "[" * 100 + '\\"{' * 50 + "\\"
    r = client.post("/api/search", json={"queries": [q], "k": 1})
    assert r.status_code == 200, r.text
    deep = {"queries": ["cat"], "x": [[[]]]}
    for _ in range(60):
        deep["x"] = [deep["x"]]
    r = client.post("/api/search", json=deep)  # 64 levels: allowed by the JSON check, then refused as an extra field
    assert r.status_code == 422 and r.json()["error"]["fields"] == ["x"]


def test_nesting_depth_scan_matches_the_parsed_value():
    import random

    from embedkit.serve.inputs import _max_depth

    def depth(o):
        if isinstance(o, (dict, list)):
            return 1 + max(map(depth, o.values() if isinstance(o, dict) else o), default=0)
        return 0

    rng = random.Random(0)

    def gen(d):
        r = rng.random()
        if d > 7 or r < 0.3:
            return rng.choice(["a[b", 'q"\\"[', "\\\\", "]]}", 1, 2.5, None, "x\\", '\\"{', "\u00e9["])
        if r < 0.65:
            return [gen(d + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["k[", '\\"', "z"]) + str(i): gen(d + 1) for i in range(rng.randint(0, 3))}

    for _ in range(400):
        o = gen(0)
        for ascii_only in (True, False):
            assert _max_depth(json.dumps(o, ensure_ascii=ascii_only).encode()) == depth(o)


def test_ids_with_control_characters_are_refused_and_stored_ones_stay_reachable(client):
    for bad, shown in (("nl\nid", "U+000A at character 2"), ("tab\tid", "U+0009 at character 3"),
                       ("\x00", "U+0000 at character 0"), ("c1\x85", "U+0085 at character 2")):
        r = client.post("/api/documents", json={"documents": [{"id": "ok", "text": "the cat"},
                                                              {"id": bad, "text": "the dog"}]}, headers=AUTH)
        assert r.status_code == 422, r.text
        assert r.json()["error"] == {"code": "invalid_document", "message": (
            f"documents[1].id {bad!r} contains a control character ({shown}); ids must be printable text (so that "
            "/api/documents/{id} can reach them)")}
    assert client.service.log.records == 0
    # an id with a newline that came in another way (a corpus) can still be read and deleted
    client.service.index.add(["the horse ran"], ["nl\nid"])
    r = client.get("/api/documents/nl%0Aid")
    assert r.status_code == 200 and r.json()["id"] == "nl\nid"
    r = client.delete("/api/documents/nl%0Aid", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"removed": "nl\nid"}
    assert client.get("/api/documents/nl%0Aid").json()["error"]["code"] == "unknown_id"


def test_stored_metadata_json_cannot_carry_is_still_served(client, monkeypatch):
    # written by an older embedkit (the library now refuses NaN and lone surrogates too) or another
    # tool: answered, not a 500 on every hit
    import embedkit.data.documents as documents

    monkeypatch.setattr(documents, "_check_metadata", lambda m, i, did: None)
    client.service.index.add(["the zebra grazed"], ["z"], [{"score": float("nan"), "big": float("inf"), "\ud800": [1.5]}])
    monkeypatch.undo()
    r = client.get("/api/documents/z")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "z", "text": "the zebra grazed", "metadata": {"score": None, "big": None, "\ud800": [1.5]}}
    hits = client.get("/api/search", params={"q": "the zebra grazed", "k": 20}).json()["hits"]
    assert {"score": None, "big": None, "\ud800": [1.5]} in [h["metadata"] for h in hits]


def test_type_errors_name_fields_the_same_way(client):
    r = client.post("/api/documents", json={"documents": [{"id": 5, "text": "the cat"}]}, headers=AUTH)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["fields"] == ["documents[0].id"]
    assert err["message"].startswith("documents[0].id: Input should be a valid string")


def test_body_must_be_json(client):
    r = client.post("/api/search", content=b"queries=cat", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = client.post("/api/documents", content=b'{"documents": []}', headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 415


# --- documents -----------------------------------------------------------------------------------------

def test_get_document_and_unknown_id(client):
    r = client.get("/api/documents/cat")
    assert r.status_code == 200
    assert r.json() == {"id": "cat", "text": DOCS[0][1], "metadata": {"kind": "pet", "legs": 4}}
    r = client.get("/api/documents/no-such-doc")
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "unknown_id", "message": "no document with id 'no-such-doc'", "id": "no-such-doc"}


def test_add_then_search_then_remove_then_search(client):
    doc = {"id": "new/1", "text": "the horse and the cow eat food", "metadata": {"src": "test", "n": [1, 2]}}
    r = client.post("/api/documents", json={"documents": [doc]}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json() == {"added": 1, "ids": ["new/1"]}
    hits = client.get("/api/search", params={"q": doc["text"], "k": 1}).json()["hits"]
    assert hits[0]["id"] == "new/1" and hits[0]["metadata"] == doc["metadata"]
    assert client.get("/api/documents/new/1").json()["text"] == doc["text"]
    assert client.get("/api/health").json()["documents"] == len(DOCS) + 1

    r = client.delete("/api/documents/new/1", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"removed": "new/1"}
    hits = client.get("/api/search", params={"q": doc["text"], "k": 20}).json()["hits"]
    assert "new/1" not in [h["id"] for h in hits]
    assert len(hits) == len(DOCS)
    assert client.get("/api/documents/new/1").status_code == 404
    r = client.delete("/api/documents/new/1", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_id"
    assert client.service.log.records == 2  # one add, one remove: both on disk before the answers


def test_add_batch_is_all_or_nothing(client):
    docs = [{"id": "a1", "text": "the fish eat"}, {"id": "cat", "text": "a clash with an existing id"}]
    r = client.post("/api/documents", json={"documents": docs}, headers=AUTH)
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "conflict" and err["ids"] == ["cat"]
    assert client.get("/api/documents/a1").status_code == 404
    r = client.post("/api/documents", json={"documents": [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}]}, headers=AUTH)
    assert r.status_code == 422 and "duplicate" in r.json()["error"]["message"]
    r = client.post("/api/documents", json={"documents": [{"id": "y", "text": " \u200b "}]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_document"
    r = client.post("/api/documents", json={"documents": [{"id": " ", "text": "the cat"}]}, headers=AUTH)
    assert r.status_code == 422
    r = client.post("/api/documents", json={"documents": []}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_documents"
    r = client.post("/api/documents", json={"documents": [{"id": "z", "text": None}]}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert client.service.log.records == 0
    assert client.get("/api/health").json()["documents"] == len(DOCS)


def test_html_in_documents_is_escaped_on_the_page(client):
    r = client.post("/api/documents", json={"documents": [{"id": "<b>x</b>", "text": "the cat <script>alert(1)</script>",
                                                           "metadata": {"<i>": "<img src=x>"}}]}, headers=AUTH)
    assert r.status_code == 201
    page = client.get("/", params={"q": "cat", "k": 20}).text
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page


# --- auth --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, status, code", [
    ({}, 401, "missing_token"),
    ({"Authorization": "Bearer wrong-token-0123456789"}, 401, "invalid_token"),
    ({"Authorization": f"Bearer {TOKEN}x"}, 401, "invalid_token"),
    ({"Authorization": f"Basic {TOKEN}"}, 401, "invalid_token"),
    ({"Authorization": "Bearer"}, 401, "invalid_token"),
])
def test_writes_need_the_right_token(client, headers, status, code):
    r = client.post("/api/documents", json={"documents": [{"id": "t", "text": "the cat"}]}, headers=headers)
    assert r.status_code == status
    assert r.json()["error"]["code"] == code
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.delete("/api/documents/cat", headers=headers)
    assert r.status_code == status and r.json()["error"]["code"] == code
    assert client.get("/api/documents/cat").status_code == 200
    assert client.get("/api/documents/t").status_code == 404


def test_right_token_and_searches_need_none(client):
    assert client.get("/api/search", params={"q": "cat"}).status_code == 200
    r = client.post("/api/documents", json={"documents": [{"id": "t", "text": "the cat"}]},
                    headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 201
    assert client.delete("/api/documents/t", headers=AUTH).status_code == 200


def test_auth_is_checked_before_the_body_is_read(client):
    r = client.post("/api/documents", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 401


def test_read_only_refuses_writes(client_factory):
    c = client_factory(read_only=True)
    r = c.post("/api/documents", json={"documents": [{"id": "t", "text": "the cat"}]}, headers=AUTH)
    assert r.status_code == 403 and r.json()["error"]["code"] == "read_only"
    assert c.delete("/api/documents/cat", headers=AUTH).status_code == 403
    assert c.get("/api/health").json()["writes"] is False


def test_no_token_allows_writes_only_at_a_loopback_host(client_factory):
    c = client_factory(token=None, base_url="http://127.0.0.1:8000")
    r = c.post("/api/documents", json={"documents": [{"id": "t", "text": "the cat"}]})
    assert r.status_code == 201
    r = c.post("/api/documents", json={"documents": [{"id": "u", "text": "the cat"}]}, headers={"Host": "evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"


# --- limits --------------------------------------------------------------------------------------------

def _add(client, docs):
    return client.post("/api/documents", json={"documents": docs}, headers=AUTH)


@pytest.mark.parametrize("limit, cfg, request_fn, status", [
    ("max_k", {"max_k": 5}, lambda c: c.get("/api/search", params={"q": "cat", "k": 6}), 422),
    ("max_k", {"max_k": 5}, lambda c: c.post("/api/search", json={"queries": ["cat"], "k": 6}), 422),
    ("max_query_chars", {"max_query_chars": 10}, lambda c: c.get("/api/search", params={"q": "the cat sat down"}), 422),
    ("max_query_chars", {"max_query_chars": 10}, lambda c: c.post("/api/search", json={"queries": ["cat", "x" * 11]}), 422),
    ("max_queries", {"max_queries": 2}, lambda c: c.post("/api/search", json={"queries": ["cat", "dog", "fish"]}), 413),
    ("max_documents", {"max_documents": 2},
     lambda c: _add(c, [{"id": str(i), "text": "the cat"} for i in range(3)]), 413),
    ("max_text_chars", {"max_text_chars": 20}, lambda c: _add(c, [{"id": "long", "text": "the cat " * 5}]), 413),
    ("max_id_chars", {"max_id_chars": 8}, lambda c: _add(c, [{"id": "i" * 9, "text": "the cat"}]), 422),
    ("max_metadata_bytes", {"max_metadata_bytes": 64},
     lambda c: _add(c, [{"id": "m", "text": "the cat", "metadata": {"k": "v" * 100}}]), 413),
    ("max_body_bytes", {"max_body_bytes": 200},
     lambda c: _add(c, [{"id": "b", "text": "the cat " * 40}]), 413),
    ("max_body_bytes", {"max_body_bytes": 200},
     lambda c: c.post("/api/search", json={"queries": ["the cat " * 40]}), 413),
])
def test_every_limit_answers_4xx_naming_it(client_factory, limit, cfg, request_fn, status):
    c = client_factory(**cfg)
    r = request_fn(c)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == "limit_exceeded"
    assert err["limit"] == limit and err["max"] == cfg[limit]
    assert limit in err["message"]
    assert c.service.log.records == 0


def test_body_limit_without_content_length(client_factory):
    c = client_factory(max_body_bytes=100)

    def chunks():
        for _ in range(10):
            yield b'{"documents": [' + b" " * 20

    r = c.post("/api/documents", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["limit"] == "max_body_bytes"


def test_overload_answers_503_naming_max_pending(client_factory, monkeypatch):
    import threading

    c = client_factory(max_pending=1, batch_window_ms=0)
    svc = c.service
    gate, entered = threading.Event(), threading.Event()
    real = svc._encode_queries

    def slow(texts):
        entered.set()
        gate.wait(10)
        return real(texts)

    monkeypatch.setattr(svc.batcher, "_encode", slow)
    first = svc.batcher.submit("cat", 1)      # taken by the worker, which now waits at the gate
    assert entered.wait(10)
    second = svc.batcher.submit("dog", 1)     # waits in the queue: the limit is reached
    try:
        r = c.get("/api/search", params={"q": "fish"})
    finally:
        gate.set()
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "overloaded" and err["limit"] == "max_pending" and err["max"] == 1
    assert r.headers["retry-after"] == "1"
    assert first.result(10)
    assert second.result(10)


# --- errors never leak --------------------------------------------------------------------------------

def test_internal_errors_do_not_leak_a_traceback(client_factory, monkeypatch, caplog):
    c = client_factory(raise_server_exceptions=False)

    def boom(*a, **kw):
        raise RuntimeError("secret detail /etc/passwd")

    monkeypatch.setattr(c.service.index, "search", boom)
    r = c.get("/api/search", params={"q": "cat"})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error"
    assert "secret" not in r.text and "Traceback" not in r.text and "passwd" not in r.text
    assert "ref " in err["message"]


@pytest.mark.parametrize("method, path, target", [
    ("GET", "/api/search?q=cat", "search"),
    ("POST", "/api/documents", "add_documents"),
])
def test_a_500_leaves_the_keep_alive_connection_usable(index_dir, tiny_model, monkeypatch, method, path, target):
    import http.client

    from serve_helpers import make_service, threaded_server

    from embedkit.serve.app import create_app

    svc = make_service(index_dir, tiny_model)
    with threaded_server(create_app(svc)) as (host, port):
        owner = svc.index if target == "search" else svc
        real = getattr(owner, target)
        calls = []

        def fail_once(*a, **kw):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("boom")
            return real(*a, **kw)

        monkeypatch.setattr(owner, target, fail_once)
        conn = http.client.HTTPConnection(host, port, timeout=10)
        body = json.dumps({"documents": [{"id": "n1", "text": "the horse ran"}]}) if method == "POST" else None
        headers = {**AUTH, "Content-Type": "application/json"}
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            assert r.status == 500 and json.loads(r.read())["error"]["code"] == "internal_error"
            sock = conn.sock
            conn.request(method, path, body=body, headers=headers)  # the same connection
            r = conn.getresponse()
            assert r.status in (200, 201), r.read()
            r.read()
            assert conn.sock is sock  # not reconnected
        finally:
            conn.close()


def test_unknown_route_and_method_are_json(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.put("/api/search", json={})
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.get("/static/../../etc/passwd")
    assert r.status_code == 404
    r = client.get("/static/page.html")
    assert r.status_code == 404


# --- service endpoints -----------------------------------------------------------------------------------

def test_health_stats_and_metrics(client):
    assert client.get("/api/health").json() == {"status": "ok", "documents": len(DOCS), "writes": True}
    for q in ("cat", "dog", "cat"):
        client.get("/api/search", params={"q": q})
    s = client.get("/api/stats").json()
    assert s["documents"] == len(DOCS) and s["spec"] == "binary" and s["index_type"] == "flat"
    assert s["backend"] == "torch"  # the encoder runtime
    assert s["bytes_per_vector"] == 4 and s["rescore"] == 4 and s["dim"] == 32
    assert s["model"]["fingerprint"] == client.service.index.model_fingerprint
    assert s["queries_served"] == 3 and s["uptime_seconds"] > 0
    lat = s["search_latency"]
    assert lat["window"] == 3 and 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    assert s["limits"]["max_k"] == 100 and s["auth"] == "token"
    assert TOKEN not in json.dumps(s)
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    assert 'embedkit_http_requests_total{method="GET",route="/api/search",status="200"} 3' in text
    assert 'embedkit_http_request_duration_seconds_bucket{method="GET",route="/api/search",le="+Inf"} 3' in text
    assert "embedkit_search_batch_size_count" in text
    assert f"embedkit_documents {len(DOCS)}" in text
    assert "embedkit_queries_total 3" in text


def test_openapi_lists_the_endpoints(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/documents", "/api/documents/{doc_id}", "/api/health", "/api/stats"):
        assert path in spec["paths"], path


# --- the page (server-rendered, no JavaScript needed) -----------------------------------------------

def test_page_without_query(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<form id="search" action="/" method="get"' in html and 'name="q"' in html
    assert f"{len(DOCS)} documents" in html
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    for external in ("http://", "https://", "//cdn", "fonts."):
        assert external not in html


def test_page_renders_results_with_highlights_and_permalink(client):
    r = client.get("/", params={"q": "cat kitten"})
    assert r.status_code == 200
    html = r.text
    assert '<li class="result" id="r1">' in html
    assert '<a class="doc-link" href="/doc/cat?q=cat+kitten">the <mark>cat</mark> and the <mark>kitten</mark> sleep</a>' in html
    assert '<span class="doc-id">cat</span>' in html
    assert '<p class="text">the <mark>cat</mark> and the <mark>kitten</mark> sleep</p>' in html
    assert "<dt>kind</dt><dd>pet</dd>" in html and "<dt>legs</dt><dd>4</dd>" in html
    assert " ms" in html and 'href="/?q=cat+kitten"' in html
    assert 'value="cat kitten"' in html


def test_page_errors_are_shown_not_raised(client):
    r = client.get("/", params={"q": "cat", "k": "abc"})
    assert r.status_code == 422 and 'class="error"' in r.text
    r = client.get("/", params={"q": "x" * 3000})
    assert r.status_code == 422 and "max_query_chars" in r.text


def test_static_files_are_shipped(client):
    css = client.get("/static/style.css")
    js = client.get("/static/app.js")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "url(" not in css.text and "@import" not in css.text
    assert "http" not in js.text.replace("history", "")


def test_highlight_rules():
    from embedkit.serve.page import highlight, query_words

    assert query_words("The cat, the CATS!") == ["cats", "cat"]  # stopwords ("the") are never highlighted
    assert highlight("Cats & <dogs>", "cat dog") == "<mark>Cats</mark> &amp; &lt;<mark>dogs</mark>&gt;"
    assert highlight("the cat and the dog", "the cat and the dog") == "the <mark>cat</mark> and the <mark>dog</mark>"
    assert highlight("concatenate", "cat") == "concatenate"
    assert highlight("a b", "a") == "a b"
