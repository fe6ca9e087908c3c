"""Training pairs: text pairs/triplets TSV, scored pairs, and (query, positive document id) pairs.

Formats (tab-separated, unquoted):

* text pairs / triplets: ``anchor  positive  [negative ...]`` — every field a non-empty text;
* scored pairs: the STS TSV format ``score  sentence1  sentence2`` (see :func:`read_sts_tsv`);
* retrieval pairs: a BEIR folder (``queries.jsonl`` + ``qrels/train.tsv``, relevance > 0), or a TSV
  ``query  doc_id`` naming documents of a corpus.

The header line of a pairs TSV is optional and recognised by its content, so a file without one loses
no pair: the first line is a header when its fields are column names (``anchor``, ``positive``,
``negative_1``, ``query``, ``doc_id``, ``corpus-id`` ...; see :func:`is_pairs_header`) and, for
retrieval pairs, its second field is not a document id of the corpus. Anything else is data.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

from embedkit.data.files import open_text
from embedkit.data.texts import is_blank
from embedkit.errors import DataFormatError

__all__ = ["is_pairs_header", "read_text_pairs", "read_retrieval_pairs"]

#: column names a pairs header may use (lowercased; "_", "-" and spaces ignored; trailing digits allowed)
_HEADER_NAME = re.compile(r"(anchor|query|queries|question|querytext|text|sentence|premise|hypothesis|positive|pos|"
                          r"negative|neg|hardnegative|document|doc|docid|documentid|corpusid|passage|passageid|pid|"
                          r"id|target|label)\d*")


def is_pairs_header(fields: list[str]) -> bool:
    """True when every field of a TSV line is a column name (``anchor``, ``positive``, ``negative_3``,
    ``query``, ``doc_id``, ``corpus-id`` ...), i.e. the line is a header, not a pair.

    Example:
        >>> is_pairs_header(["query", "corpus-id"]), is_pairs_header(["what causes rain", "d17"])
        (True, False)
    """
    names = [re.sub(r"[\s_\-]+", "", f.strip().lower()) for f in fields]
    return bool(names) and all(_HEADER_NAME.fullmatch(n) for n in names)


def _tsv_rows(path: str | os.PathLike, is_header) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every non-blank line; the first non-blank line is left out when
    ``is_header(fields)`` says it is a header."""
    with open_text(path) as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        first = True
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if first:
                first = False
                if is_header(row):
                    continue
            yield reader.line_num, row


def read_text_pairs(path: str | os.PathLike, *, min_columns: int = 2, max_columns: int | None = None) -> list[tuple[str, ...]]:
    """Rows of ``anchor positive [negative ...]`` texts (a first line of column names is a header).

    Raises:
        DataFormatError: a row with fewer than ``min_columns`` or more than ``max_columns`` fields, an
            empty field (file:line named), or no rows at all.
    """
    name = Path(path).name
    rows: list[tuple[str, ...]] = []
    width = None
    for line, fields in _tsv_rows(path, is_pairs_header):
        if len(fields) < min_columns or (max_columns is not None and len(fields) > max_columns):
            want = f"{min_columns}" if max_columns == min_columns else (
                f"{min_columns} to {max_columns}" if max_columns else f"at least {min_columns}")
            raise DataFormatError(f"{name}:{line}: {len(fields)} tab-separated field(s), expected {want} "
                                  "(anchor, positive[, negatives]); is the file tab-separated?")
        if width is not None and len(fields) != width:
            raise DataFormatError(f"{name}:{line}: {len(fields)} fields where earlier rows have {width}; "
                                  "every row needs the same columns")
        width = len(fields)
        for j, f in enumerate(fields):
            if is_blank(f):
                raise DataFormatError(f"{name}:{line}: field {j + 1} is empty; every anchor, positive and negative needs text")
        rows.append(tuple(fields))
    if not rows:
        raise DataFormatError(f"{name}: no pairs (the file holds at most a header line)")
    return rows


def read_retrieval_pairs(source: str | os.PathLike, *, doc_ids=None, split: str = "train") -> list[tuple[str, str]]:
    """``(query text, positive document id)`` pairs from a BEIR folder's qrels or a ``query  doc_id`` TSV.

    The TSV's first line is a header when it holds column names (``query``, ``doc_id``, ...) and its
    second field is not one of ``doc_ids``; otherwise it is the first pair.

    Args:
        source: a BEIR folder (``qrels/{split}.tsv`` with relevance > 0) or a two-column TSV.
        doc_ids: the corpus ids; a pair naming any other document is refused (file:line).
        split: the qrels split of a BEIR folder.
    """
    from embedkit.data.readers import read_beir

    p = Path(source)
    known = None if doc_ids is None else set(doc_ids)
    if p.is_dir():
        ds = read_beir(p, split=split, on_empty="keep")
        pairs = [(ds.queries[q], d) for q, rel in ds.qrels.items() for d, r in rel.items() if r > 0 and q in ds.queries]
        if known is not None:
            missing = sorted({d for _, d in pairs} - known)
            if missing:
                raise DataFormatError(f"{p.name}/qrels/{split}.tsv: document id {missing[0]!r} is not in the corpus "
                                      f"({len(missing)} such ids)")
        if not pairs:
            raise DataFormatError(f"{p.name}/qrels/{split}.tsv: no relevant (query, document) pairs")
        return pairs
    name = p.name
    pairs = []
    def is_header(fields):
        return is_pairs_header(fields) and not (known is not None and len(fields) > 1 and fields[1].strip() in known)

    for line, fields in _tsv_rows(p, is_header):
        if len(fields) != 2:
            raise DataFormatError(f"{name}:{line}: {len(fields)} fields, expected 2 (query, positive document id)")
        q, d = fields[0], fields[1].strip()
        if is_blank(q) or not d:
            raise DataFormatError(f"{name}:{line}: empty query or document id")
        if known is not None and d not in known:
            raise DataFormatError(f"{name}:{line}: positive document id {d!r} is not in the corpus")
        pairs.append((q, d))
    if not pairs:
        raise DataFormatError(f"{name}: no pairs (the file holds at most a header line)")
    return pairs
