"""Readers that validate as they read.

Every reader reports a malformed row with the file name and the 1-based line number, e.g.
``sts.tsv:17: expected 3 tab-separated fields (score, sentence1, sentence2), got 2``.
TSVs are read unquoted (``csv.QUOTE_NONE``): sentences may contain ``"``. Every file may be
gzip-compressed (``.gz``); invalid UTF-8 and corrupt or truncated gzip files are reported in one
line by :func:`embedkit.data.files.open_text`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from embedkit.data.files import iter_jsonl, iter_tsv_rows, open_text
from embedkit.data.texts import is_blank
from embedkit.errors import DataFormatError

__all__ = [
    "BeirDataset", "Corpus", "StsDataset", "iter_corpus", "read_beir", "read_corpus", "read_labelled_tsv", "read_qrels",
    "read_queries", "read_sts_tsv", "read_text_lines",
]

logger = logging.getLogger(__name__)

# Old private names, kept as aliases while callers outside embedkit.data move to the public ones.
_open_text = open_text
_tsv_rows = iter_tsv_rows
_jsonl = iter_jsonl

_ON_EMPTY = ("error", "keep", "skip")


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
            no pairs at all, or scores that are all equal (no Spearman correlation exists); the
            message names the file and line.
    """
    name = Path(path).name
    scores, s1, s2 = [], [], []
    for line, row in iter_tsv_rows(path):
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
        if is_blank(row[1]) or is_blank(row[2]):
            raise DataFormatError(f"{name}:{line}: empty sentence")
        scores.append(score)
        s1.append(row[1])
        s2.append(row[2])
    if not scores:
        raise DataFormatError(f"{name}: no sentence pairs found")
    if len(set(scores)) < 2:
        raise DataFormatError(
            f"{name}: all {len(scores)} scores are {scores[0]:g}; a Spearman correlation needs at least two "
            "different gold scores")
    stem = name.split(".tsv")[0]
    return StsDataset(stem, scores, s1, s2)


def read_labelled_tsv(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read ``label<TAB>text`` rows (header first). Returns ``(labels, texts)``.

    Raises:
        DataFormatError: a row without exactly 2 fields, an empty label or text, or no rows.
    """
    name = Path(path).name
    labels, texts = [], []
    for line, row in iter_tsv_rows(path):
        if len(row) != 2:
            raise DataFormatError(f"{name}:{line}: expected 2 tab-separated fields (label, text), got {len(row)}")
        if is_blank(row[0]):
            raise DataFormatError(f"{name}:{line}: empty label")
        if is_blank(row[1]):
            raise DataFormatError(f"{name}:{line}: empty text")
        labels.append(row[0].strip())
        texts.append(row[1])
    if not texts:
        raise DataFormatError(f"{name}: no rows found")
    return labels, texts


def _text_lines(path: str | os.PathLike, skip_empty: bool) -> Iterator[tuple[int, str]]:
    name = Path(path).name
    with open_text(path) as f:
        for i, line in enumerate(f, 1):
            text = line.rstrip("\r\n")
            if is_blank(text):
                if skip_empty:
                    continue
                raise DataFormatError(f"{name}:{i}: empty line")
            yield i, text


def read_text_lines(path: str | os.PathLike, *, skip_empty: bool = True) -> list[str]:
    """Read one text per line from ``.txt`` or ``.txt.gz``.

    Args:
        skip_empty: drop blank lines (default), including lines of only zero-width or control
            characters. With ``False`` such a line is an error.

    Raises:
        DataFormatError: no text line at all, or (``skip_empty=False``) an empty line.
    """
    out = [t for _, t in _text_lines(path, skip_empty)]
    if not out:
        raise DataFormatError(f"{Path(path).name}: no text lines found")
    return out


def _text_field(obj: dict, key: str, where: str, required: bool = True) -> str:
    """The string in ``obj[key]``: missing (if optional) or null title -> "", anything but a string refused."""
    if key not in obj:
        if required:
            raise DataFormatError(f"{where}: missing field {key!r}")
        return ""
    value = obj[key]
    if value is None:
        if required:
            raise DataFormatError(f"{where}: {key!r} is null; give a string")
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {key!r} is a JSON {type(value).__name__}, expected a string")
    return value


def _id_field(obj: dict, key: str, where: str) -> str:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(f"{where}: {key!r} must be a string or an integer, got {json_type(value)}")
    if isinstance(value, str) and not value.strip():
        raise DataFormatError(f"{where}: {key!r} is empty")
    return str(value)


def json_type(value) -> str:
    return "null" if value is None else type(value).__name__


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


def _read_beir_corpus(path: Path, on_empty: str) -> dict[str, dict[str, str]]:
    corpus: dict[str, dict[str, str]] = {}
    skipped = []
    for i, obj in iter_jsonl(path):
        where = f"{path.name}:{i}"
        if "_id" not in obj or "text" not in obj:
            raise DataFormatError(f"{where}: a document needs '_id' and 'text'")
        did = _id_field(obj, "_id", where)
        if did in corpus:
            raise DataFormatError(f"{where}: duplicate document id {did!r}")
        text, title = _text_field(obj, "text", where), _text_field(obj, "title", where, required=False)
        if is_blank(text) and is_blank(title):
            if on_empty == "error":
                raise DataFormatError(f"{where}: document {did!r} has empty title and text")
            if on_empty == "skip":
                skipped.append(did)
                continue
        corpus[did] = {"title": title, "text": text}
    if skipped:
        logger.warning("%s: skipped %d empty document(s): %s", path.name, len(skipped), ", ".join(skipped[:10]))
    if not corpus:
        raise DataFormatError(f"{path}: no documents")
    return corpus


def read_queries(path: str | os.PathLike) -> dict[str, str]:
    """Read BEIR queries: JSON Lines (``.gz`` too) with ``_id`` and ``text`` per line. Returns ``{id: text}``.

    Raises:
        DataFormatError: a line without ``_id``/``text``, a null or non-string text, an empty query,
            a duplicate id, or no queries (file:line named).
    """
    path = Path(path)
    queries: dict[str, str] = {}
    for i, obj in iter_jsonl(path):
        where = f"{path.name}:{i}"
        if "_id" not in obj or "text" not in obj:
            raise DataFormatError(f"{where}: a query needs '_id' and 'text'")
        qid = _id_field(obj, "_id", where)
        if qid in queries:
            raise DataFormatError(f"{where}: duplicate query id {qid!r}")
        text = _text_field(obj, "text", where)
        if is_blank(text):
            raise DataFormatError(f"{where}: query {qid!r} is empty")
        queries[qid] = text
    if not queries:
        raise DataFormatError(f"{path.name}: no queries found")
    return queries


def read_qrels(path: str | os.PathLike, *, doc_ids: Collection[str] | None = None,
               query_ids: Collection[str] | None = None) -> dict[str, dict[str, int]]:
    """Read BEIR relevance judgements: a TSV with a header, then ``query-id<TAB>corpus-id<TAB>score``.

    Args:
        path: the qrels file (``.gz`` too).
        doc_ids: the known document ids; a judgement naming another document is an error.
            ``None`` skips the check.
        query_ids: the known query ids, checked the same way.

    Returns:
        ``{query id: {document id: integer grade}}`` (a repeated pair keeps its last grade).

    Raises:
        DataFormatError: a row without 3 fields, a score that is not a finite integer grade
            (``high``, ``nan``, ``inf``, ``0.5``), an unknown document or query id, or no
            judgements (file:line named).
    """
    return _read_qrels(Path(path), doc_ids, query_ids, allow_empty=False)


def _read_qrels(path: Path, doc_ids, query_ids, allow_empty: bool) -> dict[str, dict[str, int]]:
    name = path.name
    if doc_ids is not None and not isinstance(doc_ids, (set, frozenset, dict)):
        doc_ids = set(doc_ids)
    if query_ids is not None and not isinstance(query_ids, (set, frozenset, dict)):
        query_ids = set(query_ids)
    qrels: dict[str, dict[str, int]] = {}
    for line, row in iter_tsv_rows(path):
        if len(row) != 3:
            raise DataFormatError(f"{name}:{line}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                                  f"got {len(row)}")
        qid, did, score = row
        try:
            s = float(score)
        except ValueError:
            raise DataFormatError(f"{name}:{line}: score {score!r} is not a number") from None
        if not math.isfinite(s):
            raise DataFormatError(f"{name}:{line}: score {score!r} is not finite")
        if s != int(s):
            raise DataFormatError(f"{name}:{line}: score {score!r} is not an integer relevance grade")
        if doc_ids is not None and did not in doc_ids:
            raise DataFormatError(f"{name}:{line}: unknown document id {did!r}")
        if query_ids is not None and qid not in query_ids:
            raise DataFormatError(f"{name}:{line}: unknown query id {qid!r}")
        qrels.setdefault(qid, {})[did] = int(s)
    if not qrels and not allow_empty:
        raise DataFormatError(f"{name}: no judgements found")
    return qrels


def read_beir(folder: str | os.PathLike, split: str = "test", *, on_empty: str = "error") -> BeirDataset:
    """Read a BEIR folder: ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``), ``queries.jsonl[.gz]``,
    ``qrels/SPLIT.tsv`` (``query-id corpus-id score`` with a header).

    Args:
        folder: the BEIR folder.
        split: the qrels split (``qrels/SPLIT.tsv``; no judgements if the file is absent).
        on_empty: a document whose title and text are both empty: ``"error"`` (default) refuses it,
            ``"keep"`` keeps it (for a caller that decides, such as an index that skips them),
            ``"skip"`` drops it with a warning.

    Raises:
        DataFormatError: a missing file, a row without ``_id``/``text``, a null text, a duplicate
            id, a malformed qrels row, or a judgement naming an unknown document or query.
    """
    if on_empty not in _ON_EMPTY:
        raise DataFormatError(f"on_empty must be one of {', '.join(_ON_EMPTY)}, got {on_empty!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: not a folder (expected a BEIR folder)")
    corpus = _read_beir_corpus(_find(folder, "corpus.jsonl", "corpus.jsonl.gz"), on_empty)
    queries = read_queries(_find(folder, "queries.jsonl", "queries.jsonl.gz"))
    qrels: dict[str, dict[str, int]] = {}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists() and (folder / "qrels" / f"{split}.tsv.gz").exists():
        qrels_path = folder / "qrels" / f"{split}.tsv.gz"
    if qrels_path.exists():
        qrels = _read_qrels(qrels_path, corpus, queries, allow_empty=True)
    return BeirDataset(folder.name, corpus, queries, qrels)


class Corpus(NamedTuple):
    """A corpus as three parallel lists; unpacks as ``ids, texts, metadata = read_corpus(path)``."""

    ids: list[str]
    texts: list[str]
    metadata: list[dict | None]


def read_corpus(path: str | os.PathLike) -> Corpus:
    """Read a corpus: a BEIR folder, a ``corpus.jsonl[.gz]`` or a text file with one document per line.

    * BEIR folder: ids from ``_id``, text = ``title + " " + text``, metadata ``{"title": ...}``.
    * JSON Lines (``.jsonl``, ``.jsonl.gz``): ``text`` required (a string), id from ``_id``, else
      ``id``, else the line number; optional ``title`` as for BEIR.
    * anything else: text lines (``.txt``, ``.txt.gz``, ...), blank lines skipped, id = the line
      number (from 1), metadata ``None``.

    Documents whose title and text are empty (or only zero-width/control characters) are *kept*
    in BEIR and JSON Lines corpora, so that the caller decides (an index skips them with a warning,
    or refuses them); use :func:`embedkit.data.is_blank` to find them.

    Returns:
        :class:`Corpus` ``(ids, texts, metadata)``: three lists of equal length.

    Raises:
        DataFormatError: a missing or unreadable file, a line without ``text``, a null or
            non-string text, a duplicate id, or no documents (file:line named).
    """
    p = Path(path)
    if p.is_dir():  # a BEIR folder: only its corpus is read (queries and qrels do not matter here)
        ds = BeirDataset(p.name, _read_beir_corpus(_find(p, "corpus.jsonl", "corpus.jsonl.gz"), "keep"), {})
        ids, texts = ds.corpus_texts()
        return Corpus(ids, texts, [{"title": d["title"]} if d.get("title") else None for d in ds.corpus.values()])
    if p.name.endswith((".jsonl", ".jsonl.gz")):
        ids, texts, meta = [], [], []
        seen: set[str] = set()
        for where, did, text, m in _iter_jsonl_corpus(p, id_key=None):
            if did in seen:
                raise DataFormatError(f"{where}: duplicate document id {did!r}")
            seen.add(did)
            ids.append(did)
            texts.append(text)
            meta.append(m)
        if not texts:
            raise DataFormatError(f"{p.name}: no documents")
        return Corpus(ids, texts, meta)
    lines = list(_text_lines(p, skip_empty=True))
    if not lines:
        raise DataFormatError(f"{p.name}: no text lines found")
    return Corpus([str(i) for i, _ in lines], [t for _, t in lines], [None] * len(lines))


def _iter_jsonl_corpus(p: Path, id_key: str | None) -> Iterator[tuple[str, str, str, dict | None]]:
    """``(file:line, id, title + " " + text, metadata)`` of a JSON Lines corpus, one line at a time.

    ``id_key`` ``"_id"`` requires that key (BEIR); ``None`` takes ``_id``, else ``id``, else the line number.
    """
    for i, obj in iter_jsonl(p):
        where = f"{p.name}:{i}"
        if "text" not in obj or (id_key is not None and id_key not in obj):
            raise DataFormatError(f"{where}: a document needs " + (f"'{id_key}' and 'text'" if id_key else "a 'text' field"))
        key = id_key or ("_id" if "_id" in obj else "id" if "id" in obj else None)
        did = _id_field(obj, key, where) if key else str(i)
        text = _text_field(obj, "text", where)
        title = _text_field(obj, "title", where, required=False)
        yield where, did, (title + " " + text).strip(), ({"title": title} if title else None)


def iter_corpus(path: str | os.PathLike) -> Iterator[tuple[str, str, str, dict | None]]:
    """Stream a corpus one document at a time: ``(where, id, text, metadata)``, ``where`` = ``file:line``.

    The same formats, ids, texts and metadata as :func:`read_corpus`, without holding the corpus in
    memory (for corpora of many millions of documents). Unlike :func:`read_corpus` it does not check
    ids for duplicates (that needs every id in memory): callers compare the ids with a record that
    was checked when it was written (e.g. the shards' ``ids_sha256``). Blank documents are yielded.

    Raises:
        DataFormatError: as :func:`read_corpus`, when the malformed line is reached.

    Example:
        >>> for where, did, text, meta in iter_corpus("corpus.jsonl"):  # doctest: +SKIP
        ...     print(where, did, text[:20])
    """
    p = Path(path)
    if p.is_dir():
        yield from _iter_jsonl_corpus(_find(p, "corpus.jsonl", "corpus.jsonl.gz"), id_key="_id")
    elif p.name.endswith((".jsonl", ".jsonl.gz")):
        yield from _iter_jsonl_corpus(p, id_key=None)
    else:
        for i, t in _text_lines(p, skip_empty=True):
            yield f"{p.name}:{i}", str(i), t, None
