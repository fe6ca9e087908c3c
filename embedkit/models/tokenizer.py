"""The fast (``tokenizers``) tokenizer with sentence-transformers' settings, shared by the ONNX
exporter (which checks it against sentence-transformers) and the ONNX runtime encoder."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_TOKEN_BUDGET", "FastTokenizer"]

#: Default most padded tokens per batch (32 texts of 256 tokens).
DEFAULT_TOKEN_BUDGET = 8192


class FastTokenizer:
    """The model's ``tokenizers`` tokenizer with sentence-transformers' settings: special tokens added,
    ``longest_first`` truncation at ``max_length``, padding to the longest text of a batch."""

    def __init__(self, path: str | os.PathLike, max_length: int, *, pad_id: int = 0, pad_side: str = "right"):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self.pad_id = int(pad_id)
        self.pad_side = pad_side
        self.max_length = int(max_length)

    @property
    def max_length(self) -> int:
        return self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:
        self._max_length = int(value)
        self._tok.enable_truncation(self._max_length, strategy="longest_first")

    def encode(self, texts: Sequence[str]) -> list:
        """``tokenizers.Encoding`` objects (truncated, not padded)."""
        return self._tok.encode_batch(list(texts), add_special_tokens=True)

    def pad(self, encodings: Sequence) -> dict[str, np.ndarray]:
        """int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` padded to the longest encoding."""
        n = len(encodings)
        width = max((len(e.ids) for e in encodings), default=0)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for i, e in enumerate(encodings):
            k = len(e.ids)
            sl = slice(width - k, width) if self.pad_side == "left" else slice(0, k)
            ids[i, sl] = e.ids
            mask[i, sl] = 1
            types[i, sl] = e.type_ids
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
