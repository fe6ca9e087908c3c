"""Training pairs: text pairs/triplets TSV, scored pairs, and (query, positive document id) pairs.

Formats (tab-separated, unquoted, one header line):

* text pairs / triplets: ``anchor  positive  [negative ...]`` — every field a non-empty text;
* scored pairs: the STS TSV format ``score  sentence1  sentence2`` (see :func:`read_sts_tsv`);
* retrieval pairs: a BEIR folder (``queries.jsonl`` + ``qrels/train.tsv``, relevance > 0), or a TSV
  ``query  doc_id`` naming documents of a corpus.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedkit.data.files import iter_tsv_rows
from embedkit.data.texts import is_blank
from embedkit.errors import DataFormatError

__all__ = ["read_text_pairs", "read_retrieval_pairs"]


def read_text_pairs(path: str | os.PathLike, *, min_columns: int = 2, max_columns: int | None = None) -> list[tuple[str, ...]]:
    """Rows of ``anchor positive [negative ...]`` texts.

    Raises:
        DataFormatError: a row with fewer than ``min_columns`` or more than ``max_columns`` fields, an
            empty field (file:line named), or no rows at all.
    """
    name = Path(path).name
    rows: list[tuple[str, ...]] = []
    width = None
    for line, fields in iter_tsv_rows(path):
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
        raise DataFormatError(f"{name}: no pairs after the header line")
    return rows


def read_retrieval_pairs(source: str | os.PathLike, *, doc_ids=None, split: str = "train") -> list[tuple[str, str]]:
    """``(query text, positive document id)`` pairs from a BEIR folder's qrels or a ``query  doc_id`` TSV.

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
    for line, fields in iter_tsv_rows(p):
        if len(fields) != 2:
            raise DataFormatError(f"{name}:{line}: {len(fields)} fields, expected 2 (query, positive document id)")
        q, d = fields[0], fields[1].strip()
        if is_blank(q) or not d:
            raise DataFormatError(f"{name}:{line}: empty query or document id")
        if known is not None and d not in known:
            raise DataFormatError(f"{name}:{line}: positive document id {d!r} is not in the corpus")
        pairs.append((q, d))
    if not pairs:
        raise DataFormatError(f"{name}: no pairs after the header line")
    return pairs
