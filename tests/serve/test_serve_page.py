"""The search page people read (issue 28 item 3): a title line, a short snippet around the query's words
(no stopword highlights), a readable document view, a note when results are weak, and /docs offline."""

from __future__ import annotations

import html as htmllib
import re

import pytest
from serve_helpers import AUTH

from embedkit.serve import page as page_mod
from embedkit.serve.page import SNIPPET_CHARS, ScoreBaseline, snippet, title_and_body

FILLER = "the market was slow and the stock price fell. " * 20
LONG = {"id": "long/doc 1", "text": "A story of a cat " + FILLER + "Then the cat and the kitten sleep on the bank. "
        + FILLER, "metadata": {"title": "A story of a cat", "year": 2020}}


def _visible(fragment: str) -> str:
    return htmllib.unescape(re.sub(r"<[^>]+>", "", fragment))


def _result(page: str, doc_id: str) -> str:
    for li in re.findall(r'<li class="result".*?</li>', page, re.S):
        if f'<span class="doc-id">{htmllib.escape(doc_id)}</span>' in li:
            return li
    raise AssertionError(f"no result {doc_id!r}")


@pytest.fixture
def client_long(client):
    r = client.post("/api/documents", json={"documents": [LONG]}, headers=AUTH)
    assert r.status_code == 201, r.text
    return client


# --- snippets and titles (pure functions) ------------------------------------------------------------

def test_snippet_is_short_placed_on_the_query_words_and_escaped():
    text = "Intro <b>tag</b> words. " + "filler text here. " * 40 + "The cat & the kitten sleep. " + "tail. " * 40
    got = snippet(text, "the kitten and the cat")
    visible = _visible(got)
    assert len(visible) <= SNIPPET_CHARS + 4  # the window plus "… " and " …"
    assert visible.startswith("… ") and visible.endswith(" …")
    assert "<mark>cat</mark> &amp; the <mark>kitten</mark>" in got  # both words in one window, '&' escaped
    assert "<mark>the</mark>" not in got and "<mark>and</mark>" not in got  # no stopword highlights
    start = snippet(text, "zebra")  # no match: the start of the text, escaped, cut at a word boundary
    assert start.startswith("Intro &lt;b&gt;tag&lt;/b&gt; words.") and start.endswith(" …")
    assert "<b>" not in start
    assert snippet("short <i>text</i>", "text") == "short &lt;i&gt;<mark>text</mark>&lt;/i&gt;"
    assert "  " not in _visible(snippet("a\n\n  b   c " * 60, "b"))  # whitespace collapsed


def test_title_line_from_metadata_or_first_sentence():
    assert title_and_body("Vitamin D. It helps bones.", {"title": "Vitamin D."}) == ("Vitamin D.", "It helps bones.")
    assert title_and_body("First sentence here. Second one.", None) == ("First sentence here.",
                                                                        "First sentence here. Second one.")
    title, _ = title_and_body("word " * 100, {"title": "  "})
    assert len(title) <= page_mod.TITLE_CHARS + 2 and title.endswith(" …")


# --- the page ---------------------------------------------------------------------------------------

def test_result_shows_title_line_snippet_and_links_to_the_document_view(client_long):
    r = client_long.get("/", params={"q": "the cat and the kitten sleep", "k": 20})
    assert r.status_code == 200
    li = _result(r.text, LONG["id"])
    title = re.search(r'<h2 class="title"><a class="doc-link" href="([^"]+)">(.*?)</a></h2>', li)
    assert htmllib.unescape(title.group(1)) == "/doc/long%2Fdoc%201?q=the+cat+and+the+kitten+sleep"
    assert title.group(2) == "A story of a <mark>cat</mark>"  # the title line, once
    text = re.search(r'<p class="text">(.*?)</p>', li).group(1)
    assert len(_visible(text)) <= SNIPPET_CHARS + 4 < len(LONG["text"]) / 4  # not the whole text
    assert "<mark>kitten</mark> <mark>sleep</mark>" in text and "A story of a" not in text
    assert "<mark>the</mark>" not in li and "<mark>and</mark>" not in li
    assert "<dt>year</dt><dd>2020</dd>" in li and "<dt>title</dt>" not in li  # the title is not repeated


def test_titles_and_snippets_are_escaped(client):
    doc = {"id": "x<1>", "text": "<script>alert(1)</script> the cat " + "& more " * 80,
           "metadata": {"title": "<img src=x onerror=alert(2)> cat"}}
    assert client.post("/api/documents", json={"documents": [doc]}, headers=AUTH).status_code == 201
    page = client.get("/", params={"q": "cat", "k": 20}).text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(2)&gt; <mark>cat</mark>" in page
    assert '<span class="doc-id">x&lt;1&gt;</span>' in page


def test_document_view_is_readable_html_not_json(client_long):
    r = client_long.get("/doc/long%2Fdoc%201", params={"q": "kitten"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    assert '<h1 class="doc-title">A story of a cat</h1>' in page
    assert '<span class="doc-id">long/doc 1</span>' in page
    body = re.search(r'<div class="doc-text">(.*?)</div>', page, re.S).group(1)
    assert _visible(body).replace(" ", "") == LONG["text"][len("A story of a cat"):].replace(" ", "")  # all of it
    assert "the <mark>kitten</mark> sleep" in body
    assert "<dt>year</dt><dd>2020</dd>" in page
    assert 'href="/?q=kitten"' in page and "back to the results" in page
    assert 'href="/api/documents/long%2Fdoc%201"' in page  # the JSON is one link away
    missing = client_long.get("/doc/nope")
    assert missing.status_code == 404 and "no document with id &#x27;nope&#x27;" in missing.text


def test_docs_page_works_offline(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for external in ("http://", "https://", "//cdn", "<script"):
        assert external not in page
    assert '<span class="method">GET</span> <code>/api/search</code>' in page
    assert '<span class="method">POST</span> <code>/api/documents</code> <span class="auth">token</span>' in page
    assert "<code>queries</code>" in page and 'href="/openapi.json"' in page
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert client.get("/redoc").status_code == 404
    err = client.get("/api/nothing").json()["error"]["message"]
    assert "(see /docs)" in err  # the page the errors point to exists


# --- weak results -----------------------------------------------------------------------------------

class _Hit:
    def __init__(self, id, score, text="", metadata=None):
        self.id, self.score, self.text, self.metadata = id, score, text, metadata


def test_score_baseline_measures_the_typical_best_score_of_other_documents():
    docs = [_Hit(f"d{i}", 0, f"topic {i} words here and more", None) for i in range(12)]
    calls = []

    def search(queries, k):
        calls.append((list(queries), k))
        # each pseudo-query finds its own document first (excluded), then another one at 0.6
        return [[_Hit(f"d{i}", 0.95), _Hit("other", 0.6)] for i in range(len(queries))]

    b = ScoreBaseline(lambda n: docs[:n], search, lambda: 40, sample=12, minimum=8)
    assert b.needs_update() and b.measure() == pytest.approx(0.6)
    assert calls[0][1] == 2 and calls[0][0][0] == "topic 0 words here and more"
    assert not b.needs_update()
    assert b.hint([_Hit("a", 0.30)]).startswith("These results look weak: the best score, 0.30, is far below the 0.60")
    assert b.hint([_Hit("a", 0.40)]) is None  # within WEAK_FRACTION of typical
    assert ScoreBaseline(lambda n: docs, search, lambda: 10).measure() is None  # too small an index to tell


def test_page_says_when_results_are_weak(client, monkeypatch):
    extra = [{"id": f"e{i}", "text": t} for i, t in enumerate(
        ["the cat ate fish", "a dog can run fast", "the bank has money", "python code has a bug", "the king was old",
         "a nurse and a doctor", "the stock market is high", "a puppy and a kitten", "trade in euro", "a slow horse"])]
    assert client.post("/api/documents", json={"documents": extra}, headers=AUTH).status_code == 201
    monkeypatch.setattr(page_mod, "WEAK_FRACTION", 100.0)  # every search looks weak
    page = client.get("/", params={"q": "cat"}).text
    assert '<p class="weak" role="note">These results look weak: the best score' in page
    monkeypatch.setattr(page_mod, "WEAK_FRACTION", 0.0)
    assert 'class="weak"' not in client.get("/", params={"q": "cat"}).text
