"""A self-contained HTML report: a summary table, PNG plots embedded as data URIs, and the JSON."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_html_report", "is_embedkit_report", "GENERATOR"]

#: the ``<meta name="generator">`` of every report embedkit writes (how a later run knows it may replace one)
GENERATOR = "embedkit"

_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}td:nth-child(3){font-size:90%;color:#444}figure{margin:1.5em 0}figcaption{color:#555;font-size:90%}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:80%}"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_html_report(path: str | os.PathLike, summary: Mapping, images: Mapping[str, str | os.PathLike], *,
                      title: str = "embedkit diagnose", captions: Mapping[str, str] | None = None,
                      rows: Mapping[str, object] | None = None, notes: Mapping[str, str] | None = None) -> Path:
    """Write one HTML file (atomically) with ``rows`` as a table (with a "how to read it" column from
    ``notes``, keyed like ``rows``), every image inline, and ``summary`` as JSON."""
    from embedkit._io import atomic_write_bytes

    captions = captions or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='generator' content='{GENERATOR}'>"
             f"<title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if rows:
        notes = notes or {}
        head = "<th>measure</th><th>value</th>" + ("<th>how to read it</th>" if notes else "")
        parts.append(f"<table><tr>{head}</tr>")
        parts += [f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td>"
                  + (f"<td>{html.escape(notes.get(k, ''))}</td>" if notes else "") + "</tr>" for k, v in rows.items()]
        parts.append("</table>")
    for name, p in images.items():
        data = base64.b64encode(Path(p).read_bytes()).decode()
        parts.append(f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,{data}' style='max-width:100%'>"
                     f"<figcaption>{html.escape(captions.get(name, name))}</figcaption></figure>")
    parts.append("<h2>JSON summary</h2><pre>" + html.escape(json.dumps(summary, indent=2, default=float)) + "</pre>")
    parts.append("</body></html>\n")
    atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
    return Path(path)


def is_embedkit_report(path: str | os.PathLike) -> bool:
    """True if ``path`` is an HTML report written by :func:`write_html_report` (safe to replace)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return f"<meta name='generator' content='{GENERATOR}'>".encode() in head
