"""Readers that validate as they read.

Every reader reports a malformed row with the file name and the 1-based line number, e.g.
``sts.tsv:17: expected 3 tab-separated fields (score, sentence1, sentence2), got 2``.
TSVs are read unquoted (``csv.QUOTE_NONE``): sentences may contain ``"``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from embedkit.errors import DataFormatError

csv.field_size_limit(1 << 30)


def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    p = Path(path)
    if not p.exists():
        raise DataFormatError(f"{p}: file not found")
    if p.is_dir():
        raise DataFormatError(f"{p}: is a folder, expected a file")
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8", newline="")
    return open(p, "r", encoding="utf-8", newline="")


def _tsv_rows(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for every data line after the header."""
    name = Path(path).name
    with _open_text(path) as f:
        try:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None:
                raise DataFormatError(f"{name}: file is empty (expected a header line)")
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                yield reader.line_num, row
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{name}: not valid UTF-8 ({e.reason} at byte {e.start})") from e


@dataclass
class StsDataset:
    """Sentence pairs with gold similarity scores."""

    name: str
    scores: list[float]
    sentences1: list[str]
    sentences2: list[str]

    def __len__(self) -> int:
        return len(self.scores)


def read_sts_tsv(path: str | os.PathLike) -> StsDataset:
    """Read an STS TSV: header, then ``score<TAB>sentence1<TAB>sentence2`` per line.

    Raises:
        DataFormatError: wrong field count, a non-numeric or non-finite score, an empty sentence,
            or no pairs at all; the message names the file and line.
    """
    name = Path(path).name
    scores, s1, s2 = [], [], []
    for line, row in _tsv_rows(path):
        if len(row) != 3:
            raise DataFormatError(
                f"{name}:{line}: expected 3 tab-separated fields (score, sentence1, sentence2), got {len(row)}"
            )
        try:
            score = float(row[0])
        except ValueError:
            raise DataFormatError(f"{name}:{line}: score {row[0]!r} is not a number") from None
        if not math.isfinite(score):
            raise DataFormatError(f"{name}:{line}: score {row[0]!r} is not finite")
        if not row[1].strip() or not row[2].strip():
            raise DataFormatError(f"{name}:{line}: empty sentence")
        scores.append(score)
        s1.append(row[1])
        s2.append(row[2])
    if not scores:
        raise DataFormatError(f"{name}: no sentence pairs found")
    stem = name.split(".tsv")[0]
    return StsDataset(stem, scores, s1, s2)


def read_labelled_tsv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read ``label<TAB>text`` rows (header first). Returns ``(labels, texts)``.

    Raises:
        DataFormatError: a row without exactly 2 fields, an empty label or text, or no rows.
    """
    name = Path(path).name
    labels, texts = [], []
    for line, row in _tsv_rows(path):
        if len(row) != 2:
            raise DataFormatError(f"{name}:{line}: expected 2 tab-separated fields (label, text), got {len(row)}")
        if not row[0].strip():
            raise DataFormatError(f"{name}:{line}: empty label")
        if not row[1].strip():
            raise DataFormatError(f"{name}:{line}: empty text")
        labels.append(row[0].strip())
        texts.append(row[1])
    if not texts:
        raise DataFormatError(f"{name}: no rows found")
    return labels, texts


def read_text_lines(path: str | os.PathLike, *, skip_empty: bool = True) -> list[str]:
    """Read one text per line from ``.txt`` or ``.txt.gz``.

    Args:
        skip_empty: drop blank lines (default). With ``False`` a blank line is an error.
    """
    name = Path(path).name
    out = []
    with _open_text(path) as f:
        try:
            for i, line in enumerate(f, 1):
                text = line.rstrip("\r\n")
                if not text.strip():
                    if skip_empty:
                        continue
                    raise DataFormatError(f"{name}:{i}: empty line")
                out.append(text)
        except UnicodeDecodeError as e:
            raise DataFormatError(f"{name}: not valid UTF-8 ({e.reason})") from e
    if not out:
        raise DataFormatError(f"{name}: no text lines found")
    return out


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    name = path.name
    with _open_text(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{name}:{i}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{name}:{i}: expected a JSON object")
            yield i, obj


@dataclass
class BeirDataset:
    """A BEIR-format retrieval set: corpus, queries and graded relevance judgements."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def corpus_texts(self) -> tuple[list[str], list[str]]:
        """(ids, texts) with the title prepended as ``title + " " + text`` (as sentence-transformers' BEIR use)."""
        ids = list(self.corpus)
        texts = [(d.get("title", "") + " " + d["text"]).strip() for d in self.corpus.values()]
        return ids, texts

    def judged_queries(self) -> tuple[list[str], list[str]]:
        """(ids, texts) of the queries that have at least one judgement in ``qrels``."""
        ids = [q for q in self.queries if q in self.qrels]
        return ids, [self.queries[q] for q in ids]


def _find(folder: Path, *names: str) -> Path:
    for n in names:
        if (folder / n).exists():
            return folder / n
    raise DataFormatError(f"{folder}: missing {names[0]} (a BEIR folder holds corpus.jsonl[.gz], queries.jsonl, qrels/*.tsv)")


def read_beir(folder: str | os.PathLike, split: str = "test") -> BeirDataset:
    """Read a BEIR folder: ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``), ``queries.jsonl[.gz]``,
    ``qrels/SPLIT.tsv`` (``query-id corpus-id score`` with a header).

    Raises:
        DataFormatError: a missing file, a row without ``_id``/``text``, a duplicate id, a
            malformed qrels row, or a judgement naming an unknown document or query.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: not a folder (expected a BEIR folder)")
    corpus_path = _find(folder, "corpus.jsonl", "corpus.jsonl.gz")
    corpus: dict[str, dict[str, str]] = {}
    for i, obj in _jsonl(corpus_path):
        if "_id" not in obj or "text" not in obj:
            raise DataFormatError(f"{corpus_path.name}:{i}: a document needs '_id' and 'text'")
        did = str(obj["_id"])
        if did in corpus:
            raise DataFormatError(f"{corpus_path.name}:{i}: duplicate document id {did!r}")
        text, title = str(obj["text"] or ""), str(obj.get("title") or "")
        if not (text.strip() or title.strip()):
            raise DataFormatError(f"{corpus_path.name}:{i}: document {did!r} has empty title and text")
        corpus[did] = {"title": title, "text": text}
    queries_path = _find(folder, "queries.jsonl", "queries.jsonl.gz")
    queries: dict[str, str] = {}
    for i, obj in _jsonl(queries_path):
        if "_id" not in obj or "text" not in obj:
            raise DataFormatError(f"{queries_path.name}:{i}: a query needs '_id' and 'text'")
        qid = str(obj["_id"])
        if qid in queries:
            raise DataFormatError(f"{queries_path.name}:{i}: duplicate query id {qid!r}")
        if not str(obj["text"]).strip():
            raise DataFormatError(f"{queries_path.name}:{i}: query {qid!r} is empty")
        queries[qid] = str(obj["text"])
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if qrels_path.exists():
        for line, row in _tsv_rows(qrels_path):
            if len(row) != 3:
                raise DataFormatError(f"{qrels_path.name}:{line}: expected 3 fields (query-id, corpus-id, score), got {len(row)}")
            qid, did, score = row
            try:
                s = int(float(score))
            except ValueError:
                raise DataFormatError(f"{qrels_path.name}:{line}: score {score!r} is not a number") from None
            if did not in corpus:
                raise DataFormatError(f"{qrels_path.name}:{line}: unknown document id {did!r}")
            if qid not in queries:
                raise DataFormatError(f"{qrels_path.name}:{line}: unknown query id {qid!r}")
            qrels.setdefault(qid, {})[did] = s
    if not corpus:
        raise DataFormatError(f"{corpus_path}: no documents")
    return BeirDataset(folder.name, corpus, queries, qrels)
