"""Compression of float embeddings: spec strings, quantizers, the pipeline, FAISS code indexes.

``quantizer_from_spec("mrl:128,binary")`` builds a :class:`CompressionPipeline`; see
:mod:`embedkit.compression.spec` for the grammar and docs/compression.md for the methods.
(The categorical-feature tables moved to :mod:`embedkit.tables`; ``embedkit.compression.tables``
remains an alias.)
"""

from __future__ import annotations

from embedkit.compression.base import CodeIndex, Quantizer, Stage, Transform, check_backend
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.compression.rescore import rescore
from embedkit.compression.spec import REGISTRY, CompressionSpec, parse, parse_spec, quantizer_from_spec

__all__ = [
    "REGISTRY",
    "CodeIndex",
    "CompressionPipeline",
    "CompressionSpec",
    "Quantizer",
    "Stage",
    "Transform",
    "check_backend",
    "parse",
    "parse_spec",
    "quantizer_from_spec",
    "rescore",
]
