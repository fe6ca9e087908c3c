"""The search page at ``/``, the document view at ``/doc/ID`` and the API reference at ``/docs``.

All three are rendered on the server (they work without JavaScript; app.js only saves page reloads).
Everything the client or a document supplies is HTML-escaped. A result shows a title line (the
document's ``title`` metadata, else its first sentence), its id and score, and a short snippet of the
text around the query's words; query words are highlighted with ``<mark>`` (a word and its
continuations: "cat" marks "cats"), never stopwords ("and", "the"). When the best score is far below
what searches of this index usually reach (:class:`ScoreBaseline`), the page says the results are weak.
"""

from __future__ import annotations

import html
import json
import re
import statistics
from collections.abc import Callable, Sequence
from importlib import resources
from string import Template
from urllib.parse import quote, urlencode

__all__ = ["MODE_LABELS", "SCORE_MEANING", "STATIC_FILES", "STOPWORDS", "ScoreBaseline", "highlight", "page_url",
           "query_words", "render_api_docs", "render_document", "render_page", "snippet", "static_file",
           "title_and_body"]

#: the only files served under /static/ (no path from the client is ever opened)
STATIC_FILES = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

#: English function words never highlighted (and never used to place a snippet)
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves
""".split())

#: characters of document text a result shows around the query's words
SNIPPET_CHARS = 240
#: characters of a title line made from a document's first sentence
TITLE_CHARS = 100
#: results are called weak below this fraction of the index's typical best score. Measured on SciFact
#: (all-MiniLM-L6-v2, binary + rescore x4): typical 0.62; the 300 test queries' best scores have their
#: 1st/5th percentile at 0.35/0.41 (3% fall below 0.6 x typical); ten off-topic or nonsense queries
#: ("asdf qwerty zxcv", "best pizza in naples", ...) reach 0.15-0.31, all below it.
WEAK_FRACTION = 0.6

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def static_file(name: str) -> bytes | None:
    if name not in STATIC_FILES:
        return None
    return resources.files("embedkit.serve").joinpath("static", name).read_bytes()


def _template(name: str = "page.html") -> Template:
    return Template(resources.files("embedkit.serve").joinpath("static", name).read_text(encoding="utf-8"))


# --- words, highlights, snippets ------------------------------------------------------------------

def query_words(query: str) -> list[str]:
    """Distinct query words to highlight: two or more characters, not a stopword, longest first."""
    words = {w.lower() for w in _WORD.findall(query) if len(w) >= 2 and w.lower() not in STOPWORDS}
    return sorted(words, key=lambda w: (-len(w), w))


def _pattern(words: Sequence[str]):
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")\w*", re.IGNORECASE | re.UNICODE)


def highlight(text: str, query: str) -> str:
    """``text`` HTML-escaped, with the query's words (and their continuations) in ``<mark>``.

    Example:
        >>> highlight("Cats & dogs", "cat and dog")
        '<mark>Cats</mark> &amp; <mark>dogs</mark>'
    """
    words = query_words(query)
    if not words:
        return html.escape(text)
    out, last = [], 0
    for m in _pattern(words).finditer(text):
        out.append(html.escape(text[last:m.start()]))
        out.append(f"<mark>{html.escape(m.group(0))}</mark>")
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _cut(text: str, start: int, end: int) -> tuple[int, int]:
    """Move ``start`` forward and ``end`` back to word boundaries (unless that empties the window)."""
    if start > 0 and not text[start - 1].isspace():
        nxt = text.find(" ", start, end)
        if nxt != -1:
            start = nxt + 1
    if end < len(text) and not text[end].isspace():
        prev = text.rfind(" ", start, end)
        if prev > start:
            end = prev
    return start, end


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """A short HTML excerpt of ``text`` (at most ``width`` characters of it, whitespace collapsed) placed
    where the most distinct query words occur, highlighted, with ``…`` where it was cut.

    Example:
        >>> snippet("Alpha beta. " * 30 + "The cat sat.", "cat", width=20)
        '… beta. The <mark>cat</mark> sat.'
    """
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= width:
        return highlight(text, query)
    words = query_words(query)
    matches = [(m.start(), m.group(0).lower()) for m in _pattern(words).finditer(text)] if words else []
    start = 0
    if matches:
        best = (-1, 0)
        for pos, _ in matches:
            s = max(0, min(pos - width // 4, len(text) - width))
            covered = {next(w for w in words if word.startswith(w)) for p, word in matches if s <= p < s + width}
            if len(covered) > best[0]:
                best = (len(covered), s)
        start = best[1]
    start, end = _cut(text, start, min(len(text), start + width))
    body = highlight(text[start:end], query)
    return ("… " if start > 0 else "") + body + (" …" if end < len(text) else "")


def title_and_body(text: str, metadata: dict | None) -> tuple[str, str]:
    """The title line of a document and the text to take a snippet from.

    The ``title`` metadata (BEIR and JSON Lines corpora store it, and prepend it to the text) when it
    is a non-blank string — then taken off the start of the text, so it is not shown twice — else the
    first sentence of the text (at most :data:`TITLE_CHARS` characters).
    """
    title = (metadata or {}).get("title")
    if isinstance(title, str) and title.strip():
        title = _SPACE.sub(" ", title).strip()
        flat = _SPACE.sub(" ", text).strip()
        return title, flat[len(title):].lstrip() if flat.startswith(title) else flat
    flat = _SPACE.sub(" ", text).strip()
    first = _SENTENCE_END.split(flat, 1)[0]
    if len(first) > TITLE_CHARS:
        s, e = _cut(first, 0, TITLE_CHARS)
        first = first[s:e] + " …"
    return first, flat


def _metadata_html(meta, skip=("title",)) -> str:
    items = []
    for key, value in (meta or {}).items():
        if key in skip:
            continue
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True)
        items.append(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(shown)}</dd>")
    return f'<dl class="meta">{"".join(items)}</dl>' if items else ""


def doc_url(doc_id: str, query: str = "") -> str:
    """The document view's address (``/doc/ID``, with ``?q=`` to keep the highlights and the way back)."""
    return "/doc/" + quote(doc_id, safe="") + ("?" + urlencode({"q": query}) if query else "")


#: what a hit's score is, per search mode (the score's tooltip)
SCORE_MEANING = {"dense": "cosine similarity", "keyword": "BM25 score",
                 "hybrid": "fused score (dense and BM25 ranks)"}
#: the search modes the page offers, with their labels
MODE_LABELS = (("dense", "dense (meaning)"), ("keyword", "keyword (BM25)"), ("hybrid", "hybrid (both)"))


def _result_html(rank: int, hit, query: str, mode: str = "dense") -> str:
    title, body = title_and_body(hit.text, hit.metadata)
    return (
        f'<li class="result" id="r{rank}">'
        f'<h2 class="title"><a class="doc-link" href="{html.escape(doc_url(hit.id, query))}">'
        f"{highlight(title, query)}</a></h2>"
        f'<div class="head"><span class="doc-id">{html.escape(hit.id)}</span>'
        f'<span class="score" title="{SCORE_MEANING.get(mode, "score")}">{hit.score:.4f}</span></div>'
        f'<p class="text">{snippet(body, query)}</p>'
        f"{_metadata_html(hit.metadata)}</li>"
    )


# --- weak results -----------------------------------------------------------------------------

class ScoreBaseline:
    """What the best score of a search of this index usually is, to tell weak results apart.

    Measured once, lazily, and again when the index has grown or shrunk by half: ``sample`` documents
    are drawn (the nearest document to each of ``sample`` random directions), each one's title line (or
    first words) is searched as a query, and the typical score is the median of the best score of a
    *different* document — what a short, on-topic query reaches. Results whose best score is below
    :data:`WEAK_FRACTION` of it are weak (a nonsense query: every hit about equally unrelated).

    Args:
        sample_documents: ``n -> list of Hit``: about n documents of the index.
        search: ``(queries, k) -> list of list of Hit``.
        size: ``() -> int``: documents in the index.
    """

    def __init__(self, sample_documents: Callable, search: Callable, size: Callable[[], int], *, sample: int = 24,
                 minimum: int = 8):
        self._sample_documents, self._search, self._size = sample_documents, search, size
        self.sample, self.minimum = sample, minimum
        self.typical: float | None = None
        self._at_size: int | None = None

    def needs_update(self) -> bool:
        n = self._size()
        return self._at_size is None or not (0.5 * self._at_size <= n <= 2 * self._at_size)

    def pseudo_queries(self, docs) -> list[tuple[str, str]]:
        out, seen = [], set()
        for hit in docs:
            if hit.id in seen:
                continue
            seen.add(hit.id)
            title, body = title_and_body(hit.text, hit.metadata)
            query = title if (hit.metadata or {}).get("title") else " ".join(body.split()[:10])
            if query.strip():
                out.append((hit.id, query.rstrip(" …")))
        return out

    def measure(self) -> float | None:
        """Measure the typical best score now (None for an index too small to tell)."""
        self._at_size = n = self._size()
        self.typical = None
        if n < 2 * self.minimum:
            return None
        pairs = self.pseudo_queries(self._sample_documents(self.sample))
        if len(pairs) < self.minimum:
            return None
        results = self._search([q for _, q in pairs], 2)
        best = [next((h.score for h in hits if h.id != source), None) for (source, _), hits in zip(pairs, results)]
        best = [b for b in best if b is not None]
        self.typical = float(statistics.median(best)) if len(best) >= self.minimum else None
        return self.typical

    def hint(self, hits) -> str | None:
        """One sentence when ``hits`` look weak against the typical score, else None."""
        if not hits or self.typical is None or self.typical <= 0:
            return None
        top = max(h.score for h in hits)
        if top >= WEAK_FRACTION * self.typical:
            return None
        return (f"These results look weak: the best score, {top:.2f}, is far below the {self.typical:.2f} a short "
                "on-topic search of this index usually reaches. Try other words.")


def random_directions(n: int, dim: int, seed: int = 0):
    """``n`` random unit vectors of ``dim`` dimensions (float32), for :meth:`ScoreBaseline` sampling."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


# --- pages ---------------------------------------------------------------------------------------

def page_url(query: str, k: int | str | None = None, mode: str = "dense", where: str = "") -> str:
    """The page's address for a search: ``/?q=...``, plus ``k``, ``mode`` and ``where`` (the filter as
    JSON text) when they are not the defaults.

    Example:
        >>> page_url("cat", 10, "hybrid", '{"year": 2020}')
        '/?q=cat&mode=hybrid&where=%7B%22year%22%3A+2020%7D'
    """
    params = {"q": query}
    if k not in (None, "", 10, "10"):
        params["k"] = str(k)
    if mode and mode != "dense":
        params["mode"] = mode
    if where and where.strip():
        params["where"] = where
    return "/?" + urlencode(params) if query else "/"


def _mode_options(mode: str, keyword: bool) -> str:
    out = []
    for value, label in MODE_LABELS:
        attrs = ' selected' if value == mode else ''
        if value != "dense" and not keyword:
            attrs += ' disabled title="this index has no keyword index (rebuild it with --keyword)"'
        out.append(f'<option value="{value}"{attrs}>{html.escape(label)}</option>')
    return "".join(out)


def render_page(*, query: str = "", k: int = 10, hits=None, took_ms: float | None = None, error: str | None = None,
                documents: int = 0, max_query_chars: int = 2000, hint: str | None = None, mode: str = "dense",
                where: str = "", keyword: bool = True) -> str:
    """The whole search page; ``hits`` (a list of Hit) is rendered when a query was given.

    ``mode`` (dense, keyword, hybrid) and ``where`` (a metadata filter, as the JSON text the user
    typed) are shown in the form as given; ``keyword``: whether the index has a keyword index (else
    the keyword and hybrid choices are disabled). ``error`` is the server's one-line message.
    """
    mode = mode if mode in SCORE_MEANING else "dense"
    if error:
        body = f'<p class="error" role="alert">{html.escape(error)}</p>'
        status = ""
    elif hits is None:
        body = ""
        status = f"{documents:,} documents. Type a query and press Enter."
    elif not hits:
        body = '<p class="empty">No results.</p>'
        status = f"0 results in {took_ms:.1f} ms"
    else:
        body = ('<ol class="results">' + "".join(_result_html(i + 1, h, query, mode) for i, h in enumerate(hits))
                + "</ol>")
        if hint:
            body = f'<p class="weak" role="note">{html.escape(hint)}</p>' + body
        status = f"{len(hits)} result{'s' if len(hits) != 1 else ''} in {took_ms:.1f} ms"
    title = f"{query} — embedkit search" if query else "embedkit search"
    return _template().substitute(
        title=html.escape(title),
        query=html.escape(query, quote=True),
        k=int(k),
        maxlength=int(max_query_chars),
        status=html.escape(status),
        results=body,
        permalink=html.escape(page_url(query, k, mode, where), quote=True),
        modes=_mode_options(mode, keyword),
        where=html.escape(where, quote=True),
    )


def _paragraphs(text: str, query: str) -> str:
    parts = [p for p in re.split(r"\n\s*\n|\n", text) if p.strip()] or [text]
    return "".join(f"<p>{highlight(_SPACE.sub(' ', p).strip(), query)}</p>" for p in parts)


def render_document(doc=None, *, doc_id: str = "", query: str = "", error: str | None = None) -> str:
    """The document view: title, id, the whole text (query words highlighted), metadata, links back to
    the results and to the document's JSON."""
    back = "/?" + urlencode({"q": query}) if query else "/"
    if doc is None:
        heading, body = "Document not found", f'<p class="error" role="alert">{html.escape(error or "")}</p>'
        page_title, json_link = "not found — embedkit search", ""
    else:
        heading, text = title_and_body(doc.text, doc.metadata)
        body = f'<div class="doc-text">{_paragraphs(text, query)}</div>{_metadata_html(doc.metadata)}'
        page_title = f"{heading} — embedkit search"
        json_link = (f' · <a href="{html.escape("/api/documents/" + quote(doc.id, safe=""))}" '
                     'type="application/json">JSON</a>')
    return _template("document.html").substitute(
        title=html.escape(page_title),
        heading=highlight(heading, query) if doc is not None else html.escape(heading),
        doc_id=html.escape(doc.id if doc is not None else doc_id),
        body=body,
        back=html.escape(back, quote=True),
        back_label="back to the results" if query else "search",
        json_link=json_link,
    )


def _schema_type(schema: dict, components: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_type(s, components) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_schema_type(schema.get('items', {}), components)}"
    return str(schema.get("type", "any"))


def render_api_docs(openapi: dict) -> str:
    """An API reference page from the app's OpenAPI schema: no JavaScript and nothing from a CDN, so it
    works offline (``/openapi.json`` is the machine-readable schema)."""
    components = openapi.get("components", {}).get("schemas", {})
    sections = []
    for path, methods in openapi.get("paths", {}).items():
        for method, op in methods.items():
            rows = []
            for p in op.get("parameters", []):
                rows.append(f"<tr><td><code>{html.escape(p['name'])}</code></td><td>{html.escape(p.get('in', ''))}</td>"
                            f"<td>{html.escape(_schema_type(p.get('schema', {}), components))}</td>"
                            f"<td>{'yes' if p.get('required') else ''}</td>"
                            f"<td>{html.escape(p.get('description', '') or p.get('schema', {}).get('description', ''))}"
                            "</td></tr>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                name = _schema_type(body, components)
                for field, spec in components.get(name, {}).get("properties", {}).items():
                    required = field in components.get(name, {}).get("required", [])
                    rows.append(f"<tr><td><code>{html.escape(field)}</code></td><td>body</td>"
                                f"<td>{html.escape(_schema_type(spec, components))}</td><td>{'yes' if required else ''}"
                                f"</td><td>{html.escape(spec.get('description', ''))}</td></tr>")
            table = ("<table><thead><tr><th>name</th><th>in</th><th>type</th><th>required</th><th>description</th>"
                     f"</tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows else ""
            auth = ' <span class="auth">token</span>' if op.get("security") else ""
            codes = ", ".join(sorted(op.get("responses", {})))
            sections.append(
                f'<section class="endpoint"><h2><span class="method">{html.escape(method.upper())}</span> '
                f"<code>{html.escape(path)}</code>{auth}</h2>"
                f"<p>{html.escape(op.get('summary', ''))}</p>{table}"
                f'<p class="codes">Answers: {html.escape(codes)}</p></section>')
    info = openapi.get("info", {})
    return _template("api.html").substitute(
        title=html.escape(f"{info.get('title', 'API')} {info.get('version', '')} — API"),
        description=html.escape(info.get("description", "")),
        endpoints="".join(sections),
    )
