"""A fitted chain of compression stages: transforms, then one quantizer.

Imports go one way: :mod:`embedkit.compression.spec` parses spec strings and builds pipelines
(:func:`~embedkit.compression.spec.quantizer_from_spec`); this module knows nothing of the spec
grammar. :meth:`CompressionPipeline.from_spec` takes a parsed spec, and :meth:`CompressionPipeline.load`
rebuilds saved stages from their recorded parameters (:func:`~embedkit.compression.base.stage_types`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedkit._io import atomic_save_npz, atomic_write_json, load_npz
from embedkit.compression.base import BACKENDS, CodeIndex, Quantizer, Stage, Transform, check_matrix, stage_types
from embedkit.compression.faiss_codec import FloatQuantizer
from embedkit.errors import EmbedkitError, NotFittedError, SpecError
from embedkit.validation import check_is_fitted, check_positive_int

__all__ = ["FORMAT", "CompressionPipeline"]

FORMAT = "embedkit.compression/1"

#: ``n`` for :meth:`CompressionPipeline.validate` when the number of fitting vectors is not known yet
#: (every check on it is a lower bound)
_UNKNOWN_N = 2**62


class BuildsStages(Protocol):
    """What :meth:`CompressionPipeline.from_spec` needs: a parsed spec that builds its stages."""

    def build(self) -> list[Stage]: ...


class CompressionPipeline:
    """Transforms applied in order, then a quantizer (``float`` when the spec names none).

    Args:
        stages: :class:`Transform` instances followed by at most one :class:`Quantizer`.

    Example:
        >>> import numpy as np
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
            transforms, last = [*transforms, last], FloatQuantizer()
        self.transforms: list[Transform] = transforms
        self.quantizer: Quantizer = last

    @classmethod
    def from_spec(cls, spec: BuildsStages) -> CompressionPipeline:
        """An unfitted pipeline of a parsed spec (:func:`embedkit.compression.spec.parse`).

        For a spec string use :func:`embedkit.compression.spec.quantizer_from_spec`.
        """
        if isinstance(spec, str):
            raise SpecError(f"CompressionPipeline.from_spec takes a parsed spec; for the string {spec!r} "
                            "use embedkit.quantizer_from_spec(spec) (or from_spec(embedkit.compression.parse(spec)))")
        return cls(list(spec.build()))

    @property
    def stages(self) -> list[Stage]:
        return [*self.transforms, self.quantizer]

    @property
    def spec(self) -> str:
        return ",".join(s.spec for s in self.stages)

    @property
    def dim_in_(self) -> int | None:
        return self.transforms[0].dim_in_ if self.transforms else getattr(self.quantizer, "dim_in_", None)

    @property
    def is_fitted(self) -> bool:
        return self.quantizer.is_fitted

    def _check_fitted(self):
        try:
            check_is_fitted(self.quantizer, "dim_in_")
        except NotFittedError:
            raise NotFittedError(f"compression {self.spec!r} is not fitted; call fit(X) first") from None

    def __repr__(self) -> str:
        return f"CompressionPipeline({self.spec!r}{'' if self.is_fitted else ', unfitted'})"

    def validate(self, dim: int, n: int | None = None, *, backend: str | None = None) -> CompressionPipeline:
        """Check every stage's hyper-parameters against ``n`` fitting vectors of dimension ``dim``
        (what :meth:`fit` checks first), without any vectors; returns ``self``.

        A spec can so be refused before the vectors exist (before a model is loaded): ``lsh:NBITS``
        above 32 bits per dimension, ``mrl:DIM`` above the dimension, ``pq:M`` not dividing it,
        ``pq:MxNBITS`` with fewer than 2**NBITS vectors, a backend the quantizer cannot search.

        Args:
            dim: the dimension of the vectors the pipeline will be fitted on.
            n: how many vectors it will be fitted on; None skips the checks that depend on it.
            backend: the index structure the codes will be searched with (flat, hnsw, ivf).

        Raises:
            EmbedkitError: (one line) a size that does not fit ``dim`` or ``n``, or an unsupported backend.
        """
        d = check_positive_int(dim, "dimension")
        n = _UNKNOWN_N if n is None else check_positive_int(n, "number of vectors")
        for t in self.transforms:
            t._validate(n, d)
            d = int(t.dim_out())
        self.quantizer._validate(n, d)
        if backend is not None:
            backends = getattr(self.quantizer, "backends", BACKENDS)
            if backend not in backends:
                raise SpecError(f"{self.quantizer.spec} supports index types {', '.join(backends)}, not {backend!r} (--index-type)")
        return self

    def fit(self, X, pairs=None) -> CompressionPipeline:
        """Fit the float transforms, then the quantizer, on ``X``.

        ``pairs``: optional ``(query_vectors, document_vectors)`` of relevant pairs, passed (through the
        fitted transforms) to quantizers that learn from them (BEBR); refused by the others.
        """
        X = check_matrix(X)
        if len(X) == 0:
            raise EmbedkitError(f"cannot fit compression {self.spec!r} on 0 vectors")
        if pairs is not None and not getattr(self.quantizer, "accepts_pairs", False):
            raise EmbedkitError(f"compression {self.spec!r}: {self.quantizer.spec} does not learn from query-document "
                                "pairs; fit pairs are used by bebr only")
        for t in self.transforms:
            X = t.fit(X).transform(X)
        if pairs is None:
            self.quantizer.fit(X)
            return self
        if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
            raise EmbedkitError("pairs must be (query_vectors, document_vectors)")
        Qp, Dp = (check_matrix(a, self.dim_in_, what) for a, what in zip(pairs, ("pair queries", "pair documents")))
        for t in self.transforms:
            Qp, Dp = t.transform(Qp), t.transform(Dp)
        self.quantizer.fit(X, pairs=(Qp, Dp))
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
        """Write ``name.json`` (spec, stage parameters and configs) and ``name.npz`` (arrays).

        Returns the file names.
        """
        self._check_fitted()
        folder = Path(folder)
        records, arrays = [], {}
        for i, stage in enumerate(self.stages):
            cfg, arr = stage.state()
            records.append({"name": stage.name, "spec": stage.spec, "params": _jsonable(stage.get_params()), "config": cfg})
            for k, v in arr.items():
                arrays[f"s{i}.{k}"] = np.asarray(v)
        atomic_write_json(folder / f"{name}.json", {"format": FORMAT, "spec": self.spec, "stages": records})
        atomic_save_npz(folder / f"{name}.npz", **arrays)
        return [f"{name}.json", f"{name}.npz"]

    @classmethod
    def load(cls, folder: str | os.PathLike, name: str = "quantizer") -> CompressionPipeline:
        """Read a pipeline written by :meth:`save` (also those written before parameters were recorded)."""
        folder = Path(folder)
        path = folder / f"{name}.json"
        try:
            meta = json.loads(path.read_text())
            arrays = load_npz(folder / f"{name}.npz")
        except (OSError, ValueError) as e:
            raise EmbedkitError(f"cannot read the quantizer in {folder}: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise EmbedkitError(f"{path}: not an embedkit quantizer (format {fmt!r})")
        records = meta.get("stages")
        if not isinstance(records, list) or not records:
            raise EmbedkitError(f"{path}: no 'stages' list")
        types = stage_types()
        stages = []
        for i, rec in enumerate(records):
            try:
                stage_cls = types[rec["name"]]
                params = rec["params"] if "params" in rec else _legacy_params(stage_cls, rec)
                stage = stage_cls(**params)
                prefix = f"s{i}."
                stage.set_state(rec["config"], {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
            except (KeyError, TypeError, ValueError) as e:
                if isinstance(e, EmbedkitError):
                    raise
                raise EmbedkitError(f"{path}: stage {i} ({rec.get('spec') if isinstance(rec, dict) else rec!r}) "
                                    f"cannot be restored: {type(e).__name__}: {e}") from e
            stages.append(stage)
        pipe = cls(stages)
        if pipe.spec != meta.get("spec"):
            raise EmbedkitError(f"{path}: quantizer stages ({pipe.spec!r}) do not match spec {meta.get('spec')!r}")
        return pipe


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


def _legacy_params(stage_cls, record: dict[str, Any]) -> dict[str, Any]:
    """Parameters of a stage saved before they were recorded: the spec token's argument fills the
    leading parameters in order (``pq:48x8`` -> m=48, nbits=8), the saved config the named others."""
    token = str(record["spec"])
    _, _, arg = token.partition(":")
    names = stage_cls.param_names()
    params: dict[str, Any] = {}
    if arg:
        if not re.fullmatch(r"\d+(x\d+)?", arg):
            raise ValueError(f"unreadable stage token {token!r}")
        for key, value in zip(names, arg.split("x")):
            params[key] = int(value)
    config = record.get("config") or {}
    for key in names:
        if key in config and key not in params:
            params[key] = config[key]
    return params
