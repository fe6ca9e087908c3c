"""Value-to-index vocabularies (sorted int64 buffers + searchsorted) for FullTables and QRTrick."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from embedkit.errors import EmbedkitError

from ._hash import hash_strings


def vocabulary_tensor(feature: str, values: Any) -> torch.Tensor:
    """Distinct, sorted, non-negative int64 ids of one feature's vocabulary."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "USO":
        values = values.tolist()
    if isinstance(values, (list, tuple)) and values and all(isinstance(v, str) for v in values):
        values = hash_strings(values)
    t = torch.as_tensor(values) if not isinstance(values, torch.Tensor) else values
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise EmbedkitError(f"vocabulary of feature {feature!r}: expected integer ids, got dtype {t.dtype}")
    t = torch.unique(t.reshape(-1).to(torch.int64))
    if t.numel() and int(t[0]) < 0:
        raise EmbedkitError(f"vocabulary of feature {feature!r}: ids must be >= 0, got {int(t[0])}")
    return t


class Vocabularies(nn.Module):
    """One sorted-id buffer per feature; :meth:`index` maps ids to ``1..n`` and unknown ids to 0."""

    def __init__(self, vocabularies: Mapping[str, Any], features: Sequence[str]) -> None:
        super().__init__()
        for f in features:
            if f not in vocabularies:
                raise EmbedkitError(f"no vocabulary given for feature {f!r}")
            self.register_buffer(f, vocabulary_tensor(f, vocabularies[f]))

    def size(self, feature: str) -> int:
        """Number of known ids (the OOV row is extra)."""
        return getattr(self, feature).numel()

    def index(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        vocab = getattr(self, feature)
        if vocab.numel() == 0:
            return torch.zeros_like(values)
        pos = torch.searchsorted(vocab, values).clamp(max=vocab.numel() - 1)
        return torch.where(vocab[pos] == values, pos + 1, torch.zeros_like(pos))
