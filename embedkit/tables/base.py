"""The shared contract of every categorical embedding table: inputs, bag pooling, save/load.

A table module maps ``{feature name: raw values}`` to ``{feature name: embeddings}``. Each value
of a feature may be

* a 1-D integer tensor ``(batch,)``: one id per example (any int64; FullTables and QRTrick need
  ids >= 0);
* a 2-D integer tensor ``(batch, length)``: a multi-valued feature padded with the module's
  ``padding_value`` (default -1), pooled per row;
* a :class:`Bag` ``(values, offsets)`` as in :class:`torch.nn.EmbeddingBag`, pooled per bag;
* a sequence (or numpy array) of strings, hashed to ids with
  :func:`~embedkit.tables._hash.hash_strings`.

Multi-valued inputs are pooled with ``"sum"`` or ``"mean"``; an empty bag gives zeros.
Subclasses implement only :meth:`CategoricalTables.embed_values` (ids -> vectors),
:meth:`CategoricalTables.get_config` and :meth:`CategoricalTables._from_saved`.
Modules save as ``config.json`` + ``model.safetensors`` in one folder (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np
import torch
from torch import nn

from embedkit._io import atomic_directory
from embedkit.errors import EmbedkitError

from ._hash import hash_strings

POOLINGS = ("sum", "mean")
FORMAT = "embedkit.tables/1"
_REGISTRY: dict[str, type[CategoricalTables]] = {}


@dataclass(frozen=True)
class Bag:
    """Multi-valued feature in flat form: bag ``b`` is ``values[offsets[b]:offsets[b + 1]]``.

    Example:
        >>> bag = Bag.from_lists([[3, 7], [], [5]])
        >>> bag.values.tolist(), bag.offsets.tolist()
        ([3, 7, 5], [0, 2, 2])
    """

    values: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int | str]]) -> Bag:
        """Build a bag from Python lists of ints or strings (strings are hashed)."""
        flat = [v for row in lists for v in row]
        lengths = torch.tensor([len(row) for row in lists], dtype=torch.int64)
        offsets = torch.zeros(len(lists), dtype=torch.int64)
        if len(lists) > 1:
            offsets[1:] = torch.cumsum(lengths, 0)[:-1]
        if flat and isinstance(flat[0], str):
            values = hash_strings(flat)
        else:
            values = torch.tensor(flat, dtype=torch.int64)
        return cls(values, offsets)


FeatureInput = Union[torch.Tensor, Bag, np.ndarray, Sequence[str]]


def _per_feature(value: Any, features: Sequence[str], what: str) -> dict[str, int]:
    """Broadcast an int (or validate a mapping) to one positive int per feature."""
    if isinstance(value, Mapping):
        missing = [f for f in features if f not in value]
        extra = [f for f in value if f not in features]
        if missing or extra:
            raise EmbedkitError(f"{what} must give every feature exactly once; missing {missing}, unknown {extra}")
        out = {f: value[f] for f in features}
    else:
        out = {f: value for f in features}
    for f, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise EmbedkitError(f"{what} for feature {f!r} must be a positive int, got {v!r}")
    return {f: int(v) for f, v in out.items()}


def _check_features(features: Sequence[str]) -> list[str]:
    features = list(features)
    if not features:
        raise EmbedkitError("at least one feature name is required")
    for f in features:
        if not isinstance(f, str) or not f or "." in f:
            raise EmbedkitError(f"feature names must be non-empty strings without '.', got {f!r}")
    if len(set(features)) != len(features):
        raise EmbedkitError(f"feature names must be unique, got {features}")
    return features


class CategoricalTables(nn.Module):
    """Base class: validates inputs, flattens bags, pools, and saves/loads (see module docstring).

    Args:
        features: feature names, in a fixed order.
        pooling: ``"sum"`` or ``"mean"`` for multi-valued features.
        padding_value: the id that marks padding in 2-D inputs.
    """

    #: ids must be >= 0 (vocabulary-based tables)
    requires_non_negative: ClassVar[bool] = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _REGISTRY[cls.__name__] = cls

    def __init__(self, features: Sequence[str], pooling: str = "mean", padding_value: int = -1) -> None:
        super().__init__()
        self.feature_names = _check_features(features)
        if pooling not in POOLINGS:
            raise EmbedkitError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.padding_value = int(padding_value)

    # -- to implement -------------------------------------------------------------------------
    @property
    def embedding_dims(self) -> dict[str, int]:
        """Output dimension of each feature."""
        raise NotImplementedError

    def embed_values(self, feature: str, values: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(n, dim)`` of a 1-D int64 tensor of already validated ids."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (tensors such as vocabularies go to the state dict)."""
        raise NotImplementedError

    @classmethod
    def _from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> CategoricalTables:
        return cls(**config)

    # -- shared machinery ---------------------------------------------------------------------
    @property
    def output_dim(self) -> int:
        """Sum of the feature dimensions (width of :meth:`concat`'s output)."""
        return sum(self.embedding_dims.values())

    def num_parameters(self) -> int:
        """Number of trainable parameters (vocabulary buffers are not counted)."""
        return sum(p.numel() for p in self.parameters())

    def _check_name(self, feature: str) -> None:
        if feature not in self.embedding_dims:
            raise EmbedkitError(
                f"unknown feature {feature!r}; this {type(self).__name__} has features {self.feature_names}"
            )

    def _as_ids(self, feature: str, x: Any) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            if x.dtype.kind in "USO":
                x = x.tolist()
            elif x.dtype.kind in "iu":
                x = torch.from_numpy(np.ascontiguousarray(x.astype(np.int64)))
            else:
                raise EmbedkitError(
                    f"feature {feature!r}: expected integer ids or strings, got a numpy array of dtype {x.dtype}"
                )
        if isinstance(x, (list, tuple)):
            if x and all(isinstance(v, str) for v in x):
                return hash_strings(x)
            try:
                x = torch.tensor(x, dtype=torch.int64) if x else torch.zeros(0, dtype=torch.int64)
            except (TypeError, ValueError, RuntimeError) as e:
                raise EmbedkitError(f"feature {feature!r}: expected ints, strings or nested lists of ints ({e})") from e
        if not isinstance(x, torch.Tensor):
            raise EmbedkitError(
                f"feature {feature!r}: expected a LongTensor, a Bag, or a list of strings, got {type(x).__name__}"
            )
        if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise EmbedkitError(
                f"feature {feature!r}: expected integer ids (torch.int64), got dtype {x.dtype}; "
                "cast ids with .long(), or hash strings with hash_strings()"
            )
        return x.to(torch.int64)

    def _check_ids(self, feature: str, values: torch.Tensor) -> None:
        if self.requires_non_negative and values.numel() and bool((values < 0).any()):
            bad = int(values[values < 0][0])
            raise EmbedkitError(
                f"feature {feature!r}: {type(self).__name__} needs ids >= 0, got {bad}; map raw values to "
                "non-negative ids (hash_strings gives non-negative ids), or use a hashed table"
            )

    def _flatten(self, feature: str, x: Any) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(flat ids, bag index of each id or None for single-valued input, batch size)."""
        if isinstance(x, Bag):
            values = self._as_ids(feature, x.values).reshape(-1)
            offsets = self._as_ids(f"{feature}.offsets", x.offsets).reshape(-1)
            n, b = values.numel(), offsets.numel()
            if b and (int(offsets[0]) != 0 or bool((offsets[1:] < offsets[:-1]).any()) or int(offsets[-1]) > n):
                raise EmbedkitError(
                    f"feature {feature!r}: Bag offsets must start at 0, be non-decreasing and <= {n} (len(values))"
                )
            lengths = torch.diff(offsets, append=torch.tensor([n]))
            segments = torch.repeat_interleave(torch.arange(b), lengths)
            return values, segments, b
        ids = self._as_ids(feature, x)
        if ids.dim() == 1:
            return ids, None, ids.shape[0]
        if ids.dim() == 2:
            mask = ids != self.padding_value
            segments = torch.arange(ids.shape[0]).unsqueeze(1).expand_as(ids)[mask]
            return ids[mask], segments, ids.shape[0]
        raise EmbedkitError(f"feature {feature!r}: ids must be 1-D (batch,) or 2-D padded (batch, length), "
                            f"got shape {tuple(ids.shape)}")

    def _pool(self, emb: torch.Tensor, segments: torch.Tensor, batch: int) -> torch.Tensor:
        out = emb.new_zeros(batch, emb.shape[1]).index_add(0, segments, emb)
        if self.pooling == "mean":
            counts = torch.bincount(segments, minlength=batch).clamp(min=1).to(emb.dtype)
            out = out / counts.unsqueeze(1)
        return out

    def embed(self, feature: str, x: FeatureInput) -> torch.Tensor:
        """Embeddings ``(batch, dim)`` of one feature (pooled if multi-valued)."""
        self._check_name(feature)
        values, segments, batch = self._flatten(feature, x)
        self._check_ids(feature, values)
        emb = self.embed_values(feature, values)
        return emb if segments is None else self._pool(emb, segments, batch)

    def forward(self, inputs: Mapping[str, FeatureInput]) -> dict[str, torch.Tensor]:
        """Embed every feature given in ``inputs`` (a subset of the features is fine).

        Returns:
            ``{feature: Tensor (batch, embedding_dims[feature])}`` in the order of ``inputs``.
        """
        if not isinstance(inputs, Mapping):
            raise EmbedkitError(f"{type(self).__name__} expects a dict of feature name -> ids, "
                                f"got {type(inputs).__name__}")
        return {name: self.embed(name, x) for name, x in inputs.items()}

    def concat(self, inputs: Mapping[str, FeatureInput]) -> torch.Tensor:
        """All features' embeddings concatenated in :attr:`feature_names` order ``(batch, output_dim)``."""
        missing = [f for f in self.feature_names if f not in inputs]
        if missing:
            raise EmbedkitError(f"concat needs every feature; missing {missing}")
        out = self(inputs)
        return torch.cat([out[f] for f in self.feature_names], dim=1)

    def extra_repr(self) -> str:
        return f"features={self.feature_names}, pooling={self.pooling!r}, parameters={self.num_parameters()}"

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` into folder ``path`` atomically."""
        from safetensors.torch import save_file

        config = {
            "format": FORMAT,
            "class": type(self).__name__,
            "config": self.get_config(),
        }
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_directory(path) as tmp:
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            save_file(state, str(tmp / "model.safetensors"))

    @classmethod
    def load(cls, path: str | Path) -> CategoricalTables:
        """Load a folder written by :meth:`save` (on the class that saved it, or on the base class)."""
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path, st_path = path / "config.json", path / "model.safetensors"
        if not cfg_path.is_file() or not st_path.is_file():
            raise EmbedkitError(f"{path} is not a saved embedding table (needs config.json and model.safetensors)")
        try:
            meta = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise EmbedkitError(f"{cfg_path} is not valid JSON: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise EmbedkitError(f"{cfg_path}: not an embedkit table folder (format {meta.get('format')!r})")
        target = _REGISTRY.get(meta.get("class", ""))
        if target is None or not issubclass(target, cls):
            raise EmbedkitError(f"{path} holds a {meta.get('class')!r}, which is not a {cls.__name__}")
        tensors = load_file(str(st_path))
        module = target._from_saved(meta["config"], tensors)
        try:
            module.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise EmbedkitError(f"{st_path} does not match {cfg_path}: {e}") from e
        return module


def load_tables(path: str | Path) -> CategoricalTables:
    """Load any table module saved with :meth:`CategoricalTables.save`."""
    return CategoricalTables.load(path)
