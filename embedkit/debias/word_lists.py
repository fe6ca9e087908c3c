"""Reading the hard-debias word lists (the JSON files of tolga-b/debiaswe) with clear errors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from embedkit.errors import DataFormatError

__all__ = ["DebiasWordLists", "load_word_lists", "default_lists_dir"]


def default_lists_dir() -> Path:
    """``<data_dir>/debias`` (the debiaswe lists shipped in the shared data folder)."""
    from embedkit._io import data_dir

    return data_dir() / "debias"


def _read_json(path: Path):
    if not path.exists():
        raise DataFormatError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path.name}:{e.lineno}: not valid JSON ({e.msg})") from e


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str]]:
    """A JSON list of 2-element string lists, e.g. ``[["woman", "man"], ...]``."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path.name}: expected a JSON list of [word_a, word_b] pairs")
    out = []
    for i, p in enumerate(data):
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(w, str) and w for w in p)):
            raise DataFormatError(f"{path.name}: item {i} is {p!r}; expected a pair of two non-empty words")
        out.append((p[0], p[1]))
    return out


def read_words(path: str | os.PathLike) -> list[str]:
    """A JSON list of words, or of lists whose first element is the word (``professions.json``)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path.name}: expected a JSON list of words")
    out = []
    for i, w in enumerate(data):
        if isinstance(w, (list, tuple)) and w and isinstance(w[0], str):
            w = w[0]
        if not isinstance(w, str) or not w:
            raise DataFormatError(f"{path.name}: item {i} is {w!r}; expected a word")
        out.append(w)
    return out


@dataclass
class DebiasWordLists:
    """The four lists hard-debias needs (plus the profession list for the direct-bias metric)."""

    definitional: list[tuple[str, str]]
    equalize: list[tuple[str, str]]
    gender_specific: list[str]
    professions: list[str]


def load_word_lists(folder: str | os.PathLike | None = None, *, full: bool = True) -> DebiasWordLists:
    """Load ``definitional_pairs.json``, ``equalize_pairs.json``, ``gender_specific_{full,seed}.json``
    and ``professions.json`` from ``folder`` (default: the shared data folder's ``debias/``)."""
    folder = Path(folder) if folder is not None else default_lists_dir()
    return DebiasWordLists(
        definitional=read_pairs(folder / "definitional_pairs.json"),
        equalize=read_pairs(folder / "equalize_pairs.json"),
        gender_specific=read_words(folder / ("gender_specific_full.json" if full else "gender_specific_seed.json")),
        professions=read_words(folder / "professions.json"),
    )
