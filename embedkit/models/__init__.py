"""Encoders: loading, identity, sub-models, pooling, ONNX backends and TempScale.

Layers, lowest first: :mod:`~embedkit.models.identity` (fingerprints that follow in-place changes),
:mod:`~embedkit.models.resolve` (names and folders, offline switches, devices, a model's description),
:mod:`~embedkit.models.tokenizer`, :mod:`~embedkit.models.submodel` (cutting layers x dims),
:mod:`~embedkit.models.st` (the sentence-transformers loader), :mod:`~embedkit.models.onnx_export` and
:mod:`~embedkit.models.onnx` (ONNX Runtime backends), then :mod:`~embedkit.models.loading`
(``load_encoder``, the one dispatcher on ``backend=``) and :mod:`~embedkit.models.export` (writing a
sub-model). Beside them: ``pooling`` (NV-Embed latent attention), ``bidirectional``, ``tempscale``.
"""

from embedkit.models.identity import ModelIdentity, identity
from embedkit.models.loading import (
    DEFAULT_MODEL_NAME,
    default_model_path,
    is_offline,
    load_causal_lm,
    load_encoder,
    model_description,
    model_fingerprint,
    resolve_model,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "ModelIdentity",
    "default_model_path",
    "identity",
    "is_offline",
    "load_causal_lm",
    "load_encoder",
    "model_description",
    "model_fingerprint",
    "resolve_model",
]
