"""Compression spec strings: the grammar, the registry of stage names, and building pipelines.

A spec is comma-separated stages applied left to right: any number of float transforms, then at
most one quantizer (``float`` is implied when none is given)::

    float | f16 | int8 | binary | mrl:DIM | lsh:NBITS | itq:NBITS | pq:M[xNBITS] | opq:M[xNBITS]
    | rabitq:NBITS | bebr:NBITS[xWIDTH]

Examples: ``"binary"``, ``"mrl:128,binary"``, ``"mrl:256,bebr:2"``, ``"pq:48x8"``.

This module is the only place that knows stage names: :data:`REGISTRY` maps each name to its
builder (the stage class) and its argument parser. It imports
:mod:`~embedkit.compression.pipeline`, never the reverse: :func:`quantizer_from_spec` parses a string
and hands the parsed :class:`CompressionSpec` to
:meth:`CompressionPipeline.from_spec <embedkit.compression.pipeline.CompressionPipeline.from_spec>`.
Sizes that depend on the data (``lsh:NBITS`` at most 32 bits per dimension, ``itq:NBITS`` at most the
dimension, ``pq:M`` a divisor of it, ``pq:MxNBITS`` at least 2**NBITS training vectors, ...) are checked
by :func:`check_spec` as soon as the dimension and the number of fitting vectors are known (the command
line reads the dimension from the model's config, before loading it), and again when the pipeline is fitted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedkit.compression.base import Stage
from embedkit.compression.bebr import BEBRQuantizer
from embedkit.compression.binary import SignBinaryQuantizer
from embedkit.compression.faiss_codec import Float16Quantizer, FloatQuantizer, Int8Quantizer
from embedkit.compression.itq import ITQQuantizer
from embedkit.compression.lsh import LSHQuantizer
from embedkit.compression.mrl import MatryoshkaTruncation
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.compression.pq import OPQQuantizer, PQQuantizer
from embedkit.compression.rabitq import RaBitQQuantizer
from embedkit.errors import SpecError

__all__ = ["FAISS_HELD", "OWN_SEARCH", "REGISTRY", "CompressionSpec", "StageSpec", "check_spec", "code_bytes_per_vector",
           "parse", "parse_spec", "quantizer_from_spec", "spec_output_dim", "stage_class"]

_INT = re.compile(r"^\d+$")

#: parses a stage's argument (the text after ``name:``, or None) into constructor keywords
ArgParser = Callable[[str, "str | None"], "dict[str, Any]"]


def _no_arg(name: str, arg: str | None) -> dict[str, Any]:
    if arg is not None:
        raise SpecError(f"spec stage {name!r} takes no argument, got {name}:{arg}")
    return {}


def _int_arg(key: str, lo: int = 1, hi: int | None = None) -> ArgParser:
    def parse(name: str, arg: str | None) -> dict[str, Any]:
        if arg is None or not _INT.match(arg):
            raise SpecError(f"spec stage {name!r} needs an integer argument, e.g. {name}:{max(lo, 8) if hi is None else lo}")
        v = int(arg)
        if v < lo or (hi is not None and v > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise SpecError(f"spec stage {name}:{arg}: value must be {rng}")
        return {key: v}

    return parse


def _mxn_arg(default_nbits: int) -> ArgParser:
    def parse(name: str, arg: str | None) -> dict[str, Any]:
        m = re.match(r"^(\d+)(?:x(\d+))?$", arg or "")
        if not m:
            raise SpecError(f"spec stage {name!r} needs M or MxNBITS, e.g. {name}:48 or {name}:48x8")
        M, nbits = int(m.group(1)), int(m.group(2) or default_nbits)
        if M < 1 or not 1 <= nbits <= 16:
            raise SpecError(f"spec stage {name}:{arg}: M must be >= 1 and NBITS 1..16")
        return {"m": M, "nbits": nbits}

    return parse


def _bebr_arg(name: str, arg: str | None) -> dict[str, Any]:
    m = re.match(r"^(\d+)(?:x(\d+))?$", arg or "")
    if not m:
        raise SpecError("spec stage 'bebr' needs NBITS or NBITSxWIDTH, e.g. bebr:2 or bebr:2x256")
    nbits = int(m.group(1))
    if not 1 <= nbits <= 4:
        raise SpecError(f"spec stage bebr:{arg}: bits per dimension (binary planes) must be 1..4")
    out: dict[str, Any] = {"nbits": nbits}
    if m.group(2):
        width = int(m.group(2))
        if width < 8 or width % 8:
            raise SpecError(f"spec stage bebr:{arg}: WIDTH (bits per plane) must be a positive multiple of 8")
        out["width"] = width
    return out


#: stage name -> (builder, argument parser). The only table of stage names.
REGISTRY: dict[str, tuple[Callable[..., Stage], ArgParser]] = {
    "float": (FloatQuantizer, _no_arg),
    "f16": (Float16Quantizer, _no_arg),
    "int8": (Int8Quantizer, _no_arg),
    "binary": (SignBinaryQuantizer, _no_arg),
    "mrl": (MatryoshkaTruncation, _int_arg("dim")),
    "lsh": (LSHQuantizer, _int_arg("nbits")),
    "itq": (ITQQuantizer, _int_arg("nbits")),
    "pq": (PQQuantizer, _mxn_arg(8)),
    "opq": (OPQQuantizer, _mxn_arg(8)),
    "rabitq": (RaBitQQuantizer, _int_arg("nbits", 1, 4)),
    "bebr": (BEBRQuantizer, _bebr_arg),
}


#: quantizers whose codes are searched by their own structure, not by a FAISS index (the disk-backed
#: index layout, written by ``index build --embeddings``, cannot hold them)
OWN_SEARCH = frozenset({"bebr"})


@dataclass(frozen=True)
class StageSpec:
    """One parsed stage: its registry name and constructor keywords."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Stage:
        """A new unfitted stage."""
        return REGISTRY[self.name][0](**self.params)


@dataclass(frozen=True)
class CompressionSpec:
    """A parsed spec string: ``text`` as given and its stages in order."""

    text: str
    stages: tuple[StageSpec, ...]

    def build(self) -> list[Stage]:
        """New unfitted stages, in order (what :meth:`CompressionPipeline.from_spec` chains)."""
        return [s.build() for s in self.stages]


def parse(spec: str) -> CompressionSpec:
    """Parse a spec string into a :class:`CompressionSpec`.

    Raises:
        SpecError: empty spec, unknown stage, malformed argument.

    Example:
        >>> [s.name for s in parse("mrl:128,binary").stages]
        ['mrl', 'binary']
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty compression spec; try 'float', 'int8', 'binary' or 'mrl:128,binary'")
    stages = []
    for token in spec.split(","):
        token = token.strip().lower()
        if not token:
            raise SpecError(f"spec {spec!r} has an empty stage (two commas?)")
        name, sep, arg = token.partition(":")
        if name not in REGISTRY:
            raise SpecError(f"unknown compression stage {name!r} in spec {spec!r}; known: {', '.join(REGISTRY)}")
        stages.append(StageSpec(name, REGISTRY[name][1](name, arg if sep else None)))
    return CompressionSpec(spec, tuple(stages))


def parse_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Split a spec string into ``[(stage name, constructor keywords), ...]``.

    Raises:
        SpecError: empty spec, unknown stage, malformed argument.

    Example:
        >>> parse_spec("mrl:128,binary")
        [('mrl', {'dim': 128}), ('binary', {})]
    """
    return [(s.name, dict(s.params)) for s in parse(spec).stages]


def stage_class(name: str):
    """The stage class registered under ``name`` (raises SpecError for an unknown name)."""
    if name not in REGISTRY:
        raise SpecError(f"unknown compression stage {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name][0]


def quantizer_from_spec(spec: str) -> CompressionPipeline:
    """Build an unfitted :class:`~embedkit.compression.pipeline.CompressionPipeline` from a spec string.

    Example:
        >>> import numpy as np
        >>> q = quantizer_from_spec("mrl:128,binary").fit(np.random.randn(100, 384))
        >>> q.code_size
        16
    """
    return CompressionPipeline.from_spec(parse(spec))


def check_spec(spec: str, *, dim: int | None = None, n_train: int | None = None, backend: str | None = None,
               disk: bool = False) -> CompressionSpec:
    """Everything about ``spec`` that can be checked before a single vector exists.

    The one check every command runs before it loads a model: the grammar and the stage order
    always; with ``dim`` (read from the model's config or the shards' manifest) and ``n_train`` (the
    number of vectors the compression will be fitted on) the sizes :meth:`fit` would refuse later.

    Args:
        spec: the spec string.
        dim: the dimension of the embeddings the spec will compress (None: not known yet).
        n_train: how many vectors it will be fitted on (None: not known yet).
        backend: the index structure (flat, hnsw, ivf) its codes will be searched with.
        disk: the codes go to the disk-backed index layout, which holds only FAISS-searched codes.

    Returns:
        The parsed spec.

    Raises:
        SpecError: (one line) a spec that does not parse, a quantizer before a transform, a size
            that does not fit ``dim`` or ``n_train``, a backend or layout the quantizer cannot use.

    Example:
        >>> [s.name for s in check_spec("mrl:128,binary", dim=384, n_train=1000).stages]
        ['mrl', 'binary']
        >>> check_spec("lsh:100000", dim=384)
        Traceback (most recent call last):
        ...
        embedkit.errors.SpecError: lsh:100000: at most 12288 bits for 384-dimensional vectors ...
    """
    from embedkit.errors import EmbedkitError

    parsed = parse(spec)
    pipeline = CompressionPipeline.from_spec(parsed)
    quantizer = parsed.stages[-1].name
    if disk and quantizer in OWN_SEARCH:
        raise SpecError(f"{quantizer} codes are searched by their own structure; the disk-backed layout "
                        f"(index build --embeddings) needs a spec whose codes FAISS holds ({', '.join(FAISS_HELD)})")
    if dim is not None:
        try:
            pipeline.validate(dim, n_train, backend=backend)
        except EmbedkitError as e:  # sizes checked against the data (too few training vectors) become SpecErrors
            if isinstance(e, SpecError):
                raise
            raise SpecError(str(e)) from None
    elif backend is not None:
        backends = getattr(pipeline.quantizer, "backends", None)
        if backends is not None and backend not in backends:
            raise SpecError(f"{pipeline.quantizer.spec} supports index types {', '.join(backends)}, not {backend!r} (--index-type)")
    return parsed


def spec_output_dim(spec: str, dim: int) -> int:
    """The dimension of the float vectors the quantizer of ``spec`` sees for ``dim``-dimensional input
    (``mrl:128,binary`` -> 128): the dimension of an index's float16 rescoring vectors.

    Raises:
        SpecError: a spec that does not parse or does not fit ``dim``.
    """
    pipeline = CompressionPipeline.from_spec(check_spec(spec, dim=dim))
    d = int(dim)
    for t in pipeline.transforms:
        d = int(t.dim_out())
    return d


def code_bytes_per_vector(spec: str, dim: int) -> int:
    """Bytes per vector of the codes ``spec`` writes for ``dim``-dimensional vectors, without fitting it.

    Equals ``quantizer_from_spec(spec).fit(X).code_size`` for any ``X`` of that dimension (RaBitQ's
    float factors included; binary codes padded to whole bytes). Rescoring vectors, index structure
    (IVF ids, HNSW links) and codebooks are not codes and are not counted here.

    Raises:
        SpecError: a spec that does not parse or does not fit ``dim``.

    Example:
        >>> code_bytes_per_vector("mrl:128,binary", 384), code_bytes_per_vector("pq:48x8", 384)
        (16, 48)
    """
    import faiss

    from embedkit.compression.bebr import BEBRQuantizer
    from embedkit.compression.binary import BinaryQuantizer
    from embedkit.compression.faiss_codec import FaissCodecQuantizer

    d = spec_output_dim(spec, dim)
    q = CompressionPipeline.from_spec(parse(spec)).quantizer
    if isinstance(q, FaissCodecQuantizer):
        body = ",".join(([q.prefix] if q.prefix else []) + [q.body(d)])
        return int(faiss.index_factory(d, body, faiss.METRIC_INNER_PRODUCT).sa_code_size())
    if isinstance(q, BEBRQuantizer):
        return int(q.nbits) * int(q.width or d) // 8
    if isinstance(q, BinaryQuantizer):
        nbits = d if isinstance(q, SignBinaryQuantizer) else int(q.nbits)
        return -(-nbits // 8)
    raise SpecError(f"{spec}: no byte count known for quantizer {q.spec!r}")  # pragma: no cover - every registered one


def _is_transform(cls) -> bool:
    from embedkit.compression.base import Transform

    return isinstance(cls, type) and issubclass(cls, Transform)


#: quantizers whose codes a FAISS index holds (registry order): every quantizer not in :data:`OWN_SEARCH`,
#: what the disk-backed index layout can store
FAISS_HELD = tuple(n for n, (cls, _) in REGISTRY.items() if n not in OWN_SEARCH and not _is_transform(cls))
