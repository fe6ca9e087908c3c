"""Encoder loading (offline default model, local folders, hub names), model identity and TempScale."""

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
