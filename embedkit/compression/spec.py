"""Compression spec strings, parsed in one place.

A spec is comma-separated stages applied left to right: any number of float transforms, then at
most one quantizer (``float`` is implied when none is given)::

    float | f16 | int8 | binary | mrl:DIM | lsh:BITS | itq:BITS | pq:M[xNBITS] | opq:M[xNBITS]
    | rabitq:BITS | bebr:BITS[xWIDTH]

Examples: ``"binary"``, ``"mrl:128,binary"``, ``"mrl:256,bebr:2"``, ``"pq:48x8"``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable

from embedkit.errors import SpecError

_INT = re.compile(r"^\d+$")


def _no_arg(name: str, arg: str | None) -> dict[str, Any]:
    if arg is not None:
        raise SpecError(f"spec stage {name!r} takes no argument, got {name}:{arg}")
    return {}


def _int_arg(key: str, lo: int = 1, hi: int | None = None) -> Callable[[str, str | None], dict[str, Any]]:
    def parse(name: str, arg: str | None) -> dict[str, Any]:
        if arg is None or not _INT.match(arg):
            raise SpecError(f"spec stage {name!r} needs an integer argument, e.g. {name}:{max(lo, 8) if hi is None else lo}")
        v = int(arg)
        if v < lo or (hi is not None and v > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise SpecError(f"spec stage {name}:{arg}: value must be {rng}")
        return {key: v}

    return parse


def _mxn_arg(default_nbits: int) -> Callable[[str, str | None], dict[str, Any]]:
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
        raise SpecError("spec stage 'bebr' needs BITS or BITSxWIDTH, e.g. bebr:2 or bebr:2x256")
    bits = int(m.group(1))
    if not 1 <= bits <= 4:
        raise SpecError(f"spec stage bebr:{arg}: bits per dimension must be 1..4")
    out: dict[str, Any] = {"bits": bits}
    if m.group(2):
        out["width"] = int(m.group(2))
    return out


#: stage name -> ("module:Class", argument parser). The only table of stage names.
REGISTRY: dict[str, tuple[str, Callable[[str, str | None], dict[str, Any]]]] = {
    "float": ("embedkit.compression.faiss_codec:FloatQuantizer", _no_arg),
    "f16": ("embedkit.compression.faiss_codec:Float16Quantizer", _no_arg),
    "int8": ("embedkit.compression.faiss_codec:Int8Quantizer", _no_arg),
    "binary": ("embedkit.compression.binary:SignBinaryQuantizer", _no_arg),
    "mrl": ("embedkit.compression.mrl:MatryoshkaTruncation", _int_arg("dim")),
    "lsh": ("embedkit.compression.lsh:LSHQuantizer", _int_arg("nbits")),
    "itq": ("embedkit.compression.itq:ITQQuantizer", _int_arg("nbits")),
    "pq": ("embedkit.compression.pq:PQQuantizer", _mxn_arg(8)),
    "opq": ("embedkit.compression.pq:OPQQuantizer", _mxn_arg(8)),
    "rabitq": ("embedkit.compression.rabitq:RaBitQQuantizer", _int_arg("bits", 1, 4)),
    "bebr": ("embedkit.compression.bebr:BEBRQuantizer", _bebr_arg),
}


def parse_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Split a spec string into ``[(stage name, constructor kwargs), ...]``.

    Raises:
        SpecError: empty spec, unknown stage, malformed argument.

    Example:
        >>> parse_spec("mrl:128,binary")
        [('mrl', {'dim': 128}), ('binary', {})]
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty compression spec; try 'float', 'int8', 'binary' or 'mrl:128,binary'")
    out = []
    for token in spec.split(","):
        token = token.strip().lower()
        if not token:
            raise SpecError(f"spec {spec!r} has an empty stage (two commas?)")
        name, _, arg = token.partition(":")
        if name not in REGISTRY:
            raise SpecError(f"unknown compression stage {name!r} in spec {spec!r}; known: {', '.join(REGISTRY)}")
        out.append((name, REGISTRY[name][1](name, arg if _ else None)))
    return out


def stage_class(name: str):
    target = REGISTRY[name][0]
    module, cls = target.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise SpecError(f"compression stage {name!r} is not available in this installation ({e})") from e


def quantizer_from_spec(spec: str):
    """Build an unfitted :class:`~embedkit.compression.pipeline.CompressionPipeline` from a spec.

    Example:
        >>> import numpy as np
        >>> q = quantizer_from_spec("mrl:128,binary").fit(np.random.randn(100, 384))
        >>> q.code_size
        16
    """
    from embedkit.compression.pipeline import CompressionPipeline

    stages = [stage_class(name)(**kwargs) for name, kwargs in parse_spec(spec)]
    return CompressionPipeline(stages)
