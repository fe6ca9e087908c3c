"""Keyword files: topics defined by a few keywords each (the input of Lbl2Vec).

Format: one label per line, ``label<TAB>kw1 kw2 ...``, or with a display name,
``label<TAB>name<TAB>kw1 kw2 ...`` (as in ``topics/ag_news/keywords_lbl2vec.tsv``, whose labels
``1``..``4`` match the documents' label column and whose names are ``World``, ``Sports``, ...).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedkit.errors import DataFormatError

__all__ = ["KeywordFile", "read_keywords"]

MAX_KEYWORD_FILE_BYTES = 64 << 20  # a keyword file is a few lines; refuse to read a huge file whole


@dataclass(frozen=True)
class KeywordFile:
    """The content of a keyword file.

    Attributes:
        labels: the label of each line (first column), in file order.
        keywords: the keyword list of each label.
        names: the display name of each label (the middle column), or ``None`` where the line has
            no name column.

    It unpacks like the pair ``(labels, keywords)`` that ``read_keywords`` returned before names
    were kept, and can be passed directly as the ``keywords`` of
    :class:`embedkit.topics.Lbl2Vec` / :class:`~embedkit.topics.Lbl2TransformerVec` (then the
    names become the models' ``display_names``).

    Example:
        >>> kf = KeywordFile(["1", "2"], [["election"], ["football"]], ["World", "Sports"])
        >>> labels, keywords = kf
        >>> labels, kf.display_names
        (['1', '2'], ['World', 'Sports'])
    """

    labels: list[str]
    keywords: list[list[str]]
    names: list[str | None]

    def __iter__(self) -> Iterator:
        yield self.labels
        yield self.keywords

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def display_names(self) -> list[str]:
        """The name of each label, or the label itself where the file gives no name."""
        return [n if n else lab for lab, n in zip(self.labels, self.names)]

    def as_dict(self) -> dict[str, list[str]]:
        """``{label: keywords}`` in file order."""
        return dict(zip(self.labels, self.keywords))


def _read_text(path: Path) -> str:
    """The file decoded as UTF-8 (``.gz`` transparently); a decoding error names the byte offset and line."""
    if not path.exists():
        raise DataFormatError(f"{path}: file not found")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a folder, expected a keyword file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_KEYWORD_FILE_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_KEYWORD_FILE_BYTES + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataFormatError(f"{path.name}: cannot read the file ({e})") from None
    if len(data) > MAX_KEYWORD_FILE_BYTES:
        raise DataFormatError(f"{path.name}: larger than {MAX_KEYWORD_FILE_BYTES >> 20} MiB; "
                              "is this really a keyword file (label<TAB>keywords per line)?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFormatError(f"{path.name}:{line}: not valid UTF-8 ({e.reason} at byte {e.start}); "
                              "save the file as UTF-8") from None


def read_keywords(path: str | os.PathLike) -> KeywordFile:
    """Read a keyword file (see the module docstring).

    A header line whose first field is ``label`` is skipped; lines starting with ``#`` and blank
    lines are ignored. With three or more fields the first is the label, the second its display
    name and the last the keywords. Keywords are separated by spaces or commas.

    Returns:
        a :class:`KeywordFile` (labels, keywords and names in file order).

    Raises:
        DataFormatError: a line without a tab, an empty label or keyword list, a repeated label
            or display name, invalid UTF-8, or no labels at all (the message names file and line).
    """
    p = Path(path)
    name = p.name
    text = _read_text(p)
    labels: list[str] = []
    keywords: list[list[str]] = []
    names: list[str | None] = []
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip("\ufeff") if i == 1 else raw
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if not labels and fields[0].strip().lower() == "label" and i == 1:
            continue
        if len(fields) < 2:
            raise DataFormatError(f"{name}:{i}: expected 'label<TAB>keyword keyword ...', found no tab")
        label = fields[0].strip()
        display = fields[1].strip() if len(fields) >= 3 else None
        kws = [k for k in re.split(r"[\s,]+", fields[-1]) if k]
        if not label:
            raise DataFormatError(f"{name}:{i}: empty label")
        if not kws:
            raise DataFormatError(f"{name}:{i}: label {label!r} has no keywords")
        if label in labels:
            raise DataFormatError(f"{name}:{i}: label {label!r} appears twice")
        if display and display in names:
            raise DataFormatError(f"{name}:{i}: name {display!r} appears twice (labels {labels[names.index(display)]!r} "
                                  f"and {label!r}); give each label its own name")
        labels.append(label)
        keywords.append(kws)
        names.append(display or None)
    if not labels:
        raise DataFormatError(f"{name}: no labels found")
    return KeywordFile(labels, keywords, names)
