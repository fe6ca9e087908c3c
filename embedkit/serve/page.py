"""The search page at ``/``: rendered on the server (works without JavaScript), enhanced by app.js.

Everything the client or a document supplies is HTML-escaped; query words are highlighted with
``<mark>`` (a word and its continuations: "cat" marks "cats").
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from string import Template
from urllib.parse import quote, urlencode

__all__ = ["render_page", "highlight", "query_words", "static_file", "STATIC_FILES"]

#: the only files served under /static/ (no path from the client is ever opened)
STATIC_FILES = {"style.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

_WORD = re.compile(r"\w+", re.UNICODE)


def static_file(name: str) -> bytes | None:
    if name not in STATIC_FILES:
        return None
    return resources.files("embedkit.serve").joinpath("static", name).read_bytes()


def _template() -> Template:
    return Template(resources.files("embedkit.serve").joinpath("static", "page.html").read_text(encoding="utf-8"))


def query_words(query: str) -> list[str]:
    """Distinct words of two or more characters, longest first (so a longer word wins a tie)."""
    words = {w.lower() for w in _WORD.findall(query) if len(w) >= 2}
    return sorted(words, key=lambda w: (-len(w), w))


def highlight(text: str, query: str) -> str:
    """``text`` HTML-escaped, with the query's words (and their continuations) in ``<mark>``.

    Example:
        >>> highlight("Cats & dogs", "cat")
        '<mark>Cats</mark> &amp; dogs'
    """
    words = query_words(query)
    if not words:
        return html.escape(text)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, words)) + r")\w*", re.IGNORECASE | re.UNICODE)
    out, last = [], 0
    for m in pattern.finditer(text):
        out.append(html.escape(text[last:m.start()]))
        out.append(f"<mark>{html.escape(m.group(0))}</mark>")
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _metadata_html(meta) -> str:
    if not meta:
        return ""
    items = []
    for key, value in meta.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=True)
        items.append(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(shown)}</dd>")
    return f'<dl class="meta">{"".join(items)}</dl>'


def _result_html(rank: int, hit, query: str) -> str:
    doc_url = "/api/documents/" + quote(hit.id, safe="")
    return (
        f'<li class="result" id="r{rank}">'
        f'<div class="head"><a class="doc-id" href="{html.escape(doc_url)}">{html.escape(hit.id)}</a>'
        f'<span class="score" title="cosine similarity">{hit.score:.4f}</span></div>'
        f'<p class="text">{highlight(hit.text, query)}</p>'
        f"{_metadata_html(hit.metadata)}</li>"
    )


def render_page(*, query: str = "", k: int = 10, hits=None, took_ms: float | None = None, error: str | None = None,
                documents: int = 0, max_query_chars: int = 2000) -> str:
    """The whole HTML page; ``hits`` (a list of Hit) is rendered when a query was given."""
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
        body = '<ol class="results">' + "".join(_result_html(i + 1, h, query) for i, h in enumerate(hits)) + "</ol>"
        status = f"{len(hits)} result{'s' if len(hits) != 1 else ''} in {took_ms:.1f} ms"
    title = f"{query} — embedkit search" if query else "embedkit search"
    return _template().substitute(
        title=html.escape(title),
        query=html.escape(query, quote=True),
        k=int(k),
        maxlength=int(max_query_chars),
        status=html.escape(status),
        results=body,
        permalink=html.escape("/?" + urlencode({"q": query}) if query else "/", quote=True),
    )
