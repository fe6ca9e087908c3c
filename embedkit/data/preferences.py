"""Preference pairs (prompt, chosen response, rejected response) for DPO-style data and CHES."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from embedkit.data.files import iter_jsonl
from embedkit.errors import DataFormatError

__all__ = ["PreferencePair", "read_preference_pairs"]

REQUIRED = ("prompt", "chosen", "rejected")


@dataclass
class PreferencePair:
    """One preference judgement: ``chosen`` is preferred over ``rejected`` as a reply to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str


def read_preference_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Read JSON Lines (``.gz`` too) with one ``{"prompt", "chosen", "rejected"}`` object per line.

    Extra fields are ignored. The prompt may be empty; the responses may not.

    Raises:
        DataFormatError: missing file, invalid UTF-8, bad JSON, a missing, null, empty or
            non-string field, or no pairs (file:line named).
    """
    path = Path(path)
    out = []
    for n, obj in iter_jsonl(path):
        for k in REQUIRED:
            if k not in obj:
                raise DataFormatError(f"{path.name}:{n}: missing field {k!r} (each line needs {', '.join(REQUIRED)})")
            if not isinstance(obj[k], str) or (k != "prompt" and not obj[k].strip()):
                raise DataFormatError(f"{path.name}:{n}: field {k!r} must be a non-empty string")
        out.append(PreferencePair(obj["prompt"], obj["chosen"], obj["rejected"]))
    if not out:
        raise DataFormatError(f"{path.name}: no preference pairs found")
    return out
