"""The search page's mode (dense / keyword / hybrid) and metadata filter controls (issue 29)."""

from __future__ import annotations

import html as htmllib
import json
import re

from serve_helpers import DOCS

from embedkit.serve.page import render_page


def _ids(page: str) -> list[str]:
    return [htmllib.unescape(m) for m in re.findall(r'<span class="doc-id">(.*?)</span>', page)]


def _error(page: str) -> str:
    return htmllib.unescape(re.search(r'<p class="error" role="alert">(.*?)</p>', page).group(1))


def test_the_form_has_mode_and_filter_controls_kept_as_given(client):
    page = client.get("/").text
    assert '<select id="mode" name="mode"><option value="dense" selected>' in page
    assert '<option value="keyword">keyword (BM25)</option>' in page
    assert '<option value="hybrid">hybrid (both)</option>' in page
    assert '<input id="where" name="where" type="text" value=""' in page
    where = '{"kind": "pet"}'
    page = client.get("/", params={"q": "kitten", "mode": "keyword", "where": where}).text
    assert '<option value="keyword" selected>' in page and '<option value="dense">' in page
    assert f'value="{htmllib.escape(where, quote=True)}"' in page  # the filter stays in its box, escaped
    link = re.search(r'<a class="permalink" href="([^"]+)"', page).group(1)
    assert htmllib.unescape(link) == "/?q=kitten&mode=keyword&where=%7B%22kind%22%3A+%22pet%22%7D"


def test_keyword_and_hybrid_modes_give_the_api_results(client):
    for mode in ("keyword", "hybrid"):
        page = client.get("/", params={"q": "the cat and the kitten", "mode": mode, "k": 5})
        assert page.status_code == 200, page.text
        api = client.get("/api/search", params={"q": "the cat and the kitten", "mode": mode, "k": 5}).json()
        assert _ids(page.text) == [h["id"] for h in api["hits"]] and api["hits"]
    assert 'title="BM25 score"' in client.get("/", params={"q": "kitten", "mode": "keyword"}).text
    assert 'title="cosine similarity"' in client.get("/", params={"q": "kitten"}).text


def test_a_filter_limits_the_results_on_the_page(client):
    pets = {d[0] for d in DOCS if (d[2] or {}).get("kind") == "pet"}
    for mode in ("dense", "keyword", "hybrid"):
        page = client.get("/", params={"q": "the cat", "mode": mode, "k": 20, "where": json.dumps({"kind": "pet"})})
        assert page.status_code == 200, page.text
        assert set(_ids(page.text)) <= pets and _ids(page.text)
    empty = client.get("/", params={"q": "the cat", "where": "  "})  # a blank filter is no filter
    assert empty.status_code == 200 and len(_ids(empty.text)) == 10


def test_a_bad_filter_shows_the_servers_one_line_error_on_the_page(client):
    bad = client.get("/", params={"q": "the cat", "where": json.dumps({"legs": "four"})})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    api = client.get("/api/search", params={"q": "the cat", "where": json.dumps({"legs": "four"})}).json()
    assert _error(bad.text) == api["error"]["message"] == \
        "where: field 'legs' holds number values; $eq got the string \"four\""
    assert '<li class="result"' not in bad.text
    assert 'value="{&quot;legs&quot;: &quot;four&quot;}"' in bad.text  # kept, to be corrected
    unknown = client.get("/", params={"q": "x", "where": '{"yr": 2020}'})
    assert unknown.status_code == 422 and _error(unknown.text) == "where: unknown field 'yr' (metadata fields: kind, legs)"
    broken = client.get("/", params={"q": "x", "where": "{nope"})
    assert broken.status_code == 422 and _error(broken.text).startswith("where: not valid JSON (")
    mode = client.get("/", params={"q": "x", "mode": "bm25"})
    assert mode.status_code == 422 and _error(mode.text) == "unknown search mode 'bm25'; choose one of dense, keyword, hybrid"


def test_without_a_keyword_index_the_page_disables_keyword_and_hybrid():
    page = render_page(keyword=False)
    assert re.search(r'<option value="keyword" disabled title="this index has no keyword index', page)
    assert re.search(r'<option value="hybrid" disabled', page)
    assert '<option value="dense" selected>' in page
