"""Helpers shared by the CLI modules: corpus reading, JSON output, model option."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from embedkit.errors import DataFormatError

model_option = click.option(
    "--model", "-m", default=None, metavar="M",
    help="sentence-transformers folder or hub name (default: the bundled all-MiniLM-L6-v2).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=float))


def read_corpus(path: str) -> tuple[list[str], list[str], list[dict | None]]:
    """Read a corpus: a BEIR folder or corpus.jsonl[.gz] (ids from ``_id``, title in metadata),
    or text lines (.txt/.txt.gz, ids = line numbers from 1). Returns (ids, texts, metadata)."""
    from embedkit.data import read_beir, read_text_lines
    from embedkit.data.readers import _jsonl

    p = Path(path)
    if p.is_dir():
        ds = read_beir(p)
        ids, texts = ds.corpus_texts()
        return ids, texts, [{"title": d["title"]} if d.get("title") else None for d in ds.corpus.values()]
    if p.name.endswith((".jsonl", ".jsonl.gz")):
        ids, texts, meta = [], [], []
        for i, obj in _jsonl(p):
            if "text" not in obj:
                raise DataFormatError(f"{p.name}:{i}: a document needs a 'text' field")
            ids.append(str(obj.get("_id", obj.get("id", i))))
            title = str(obj.get("title") or "")
            texts.append((title + " " + str(obj["text"])).strip())
            meta.append({"title": title} if title else None)
        if not texts:
            raise DataFormatError(f"{p.name}: no documents")
        return ids, texts, meta
    texts = read_text_lines(p)
    return [str(i + 1) for i in range(len(texts))], texts, [None] * len(texts)


def info(msg: str) -> None:
    click.echo(msg, err=True)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
