"""A fitted chain of compression stages: transforms, then one quantizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from embedkit._io import atomic_save_npz, atomic_write_json, load_npz
from embedkit.compression.base import CodeIndex, Quantizer, Transform, check_matrix
from embedkit.errors import EmbedkitError, NotFittedError, SpecError

FORMAT = "embedkit.compression/1"


class CompressionPipeline:
    """Transforms applied in order, then a quantizer (``float`` when the spec names none).

    Args:
        stages: :class:`Transform` instances followed by at most one :class:`Quantizer`.

    Example:
        >>> from embedkit import quantizer_from_spec
        >>> q = quantizer_from_spec("mrl:64,int8").fit(np.random.randn(500, 384))
        >>> q.encode(np.random.randn(3, 384)).shape
        (3, 64)
    """

    def __init__(self, stages: list):
        if not stages:
            raise SpecError("a compression pipeline needs at least one stage")
        *transforms, last = stages
        for s in transforms:
            if not isinstance(s, Transform):
                raise SpecError(f"quantizer {s.spec!r} must be the last stage of a spec (only transforms such as mrl:DIM go before it)")
        if isinstance(last, Transform):
            from embedkit.compression.faiss_codec import FloatQuantizer

            transforms, last = [*transforms, last], FloatQuantizer()
        self.transforms: list[Transform] = transforms
        self.quantizer: Quantizer = last

    @property
    def spec(self) -> str:
        return ",".join([t.spec for t in self.transforms] + [self.quantizer.spec])

    @property
    def dim_in_(self) -> int | None:
        return self.transforms[0].dim_in_ if self.transforms else self.quantizer.dim_in_

    @property
    def is_fitted(self) -> bool:
        return self.quantizer.is_fitted

    def _check_fitted(self):
        if not self.is_fitted:
            raise NotFittedError(f"compression {self.spec!r} is not fitted; call fit(X) first")

    def fit(self, X) -> "CompressionPipeline":
        X = check_matrix(X)
        if len(X) == 0:
            raise EmbedkitError(f"cannot fit compression {self.spec!r} on 0 vectors")
        for t in self.transforms:
            X = t.fit(X).transform(X)
        self.quantizer.fit(X)
        return self

    def transform(self, X) -> np.ndarray:
        """Apply the float transforms (the quantizer's input)."""
        self._check_fitted()
        X = check_matrix(X, self.dim_in_)
        for t in self.transforms:
            X = t.transform(X)
        return X

    def encode(self, X) -> np.ndarray:
        return self.quantizer.encode(self.transform(X))

    def decode(self, codes) -> np.ndarray:
        return self.quantizer.decode(codes)

    @property
    def code_size(self) -> int:
        """Bytes per vector of the codes."""
        self._check_fitted()
        return self.quantizer.code_size

    def new_index(self, backend: str = "flat", *, nlist=None, hnsw_m=32, train_X=None) -> CodeIndex:
        """An empty search index for this pipeline; ``add``/``search`` take *transformed* vectors."""
        self._check_fitted()
        if train_X is not None:
            train_X = self.transform(train_X)
        return self.quantizer.new_index(backend, nlist=nlist, hnsw_m=hnsw_m, train_X=train_X)

    def index_from_bytes(self, data: bytes, backend: str) -> CodeIndex:
        return self.quantizer.index_from_bytes(data, backend)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, name: str = "quantizer") -> list[str]:
        """Write ``name.json`` (spec + stage configs) and ``name.npz`` (arrays). Returns file names."""
        self._check_fitted()
        folder = Path(folder)
        configs, arrays = [], {}
        for i, stage in enumerate([*self.transforms, self.quantizer]):
            cfg, arr = stage.state()
            configs.append({"name": stage.name, "spec": stage.spec, "config": cfg})
            for k, v in arr.items():
                arrays[f"s{i}.{k}"] = np.asarray(v)
        atomic_write_json(folder / f"{name}.json", {"format": FORMAT, "spec": self.spec, "stages": configs})
        atomic_save_npz(folder / f"{name}.npz", **arrays)
        return [f"{name}.json", f"{name}.npz"]

    @classmethod
    def load(cls, folder: str | os.PathLike, name: str = "quantizer") -> "CompressionPipeline":
        from embedkit.compression.spec import quantizer_from_spec

        folder = Path(folder)
        try:
            meta = json.loads((folder / f"{name}.json").read_text())
            arrays = load_npz(folder / f"{name}.npz")
        except (OSError, ValueError) as e:
            raise EmbedkitError(f"cannot read the quantizer in {folder}: {e}") from e
        if meta.get("format") != FORMAT:
            raise EmbedkitError(f"{folder / (name + '.json')}: not an embedkit quantizer (format {meta.get('format')!r})")
        pipe = quantizer_from_spec(meta["spec"])
        stages = [*pipe.transforms, pipe.quantizer]
        if len(stages) != len(meta["stages"]):
            raise EmbedkitError(f"{folder}: quantizer stages do not match spec {meta['spec']!r}")
        for i, (stage, cfg) in enumerate(zip(stages, meta["stages"])):
            prefix = f"s{i}."
            stage._set_state(cfg["config"], {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        return pipe
