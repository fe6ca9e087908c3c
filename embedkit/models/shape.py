"""A model's shape read from its configuration files, without loading any weights.

The command line checks every argument before it loads a model; some arguments depend on the model's
size (``--spec mrl:512`` on a 384-d model, ``--layers 99`` on a 6-layer one, ``lsh:NBITS`` capped by the
dimension). :func:`read_shape` reads what those checks need from a local sentence-transformers folder:
the transformer's ``config.json`` and the configs of the modules that follow it (pooling, Dense,
embedkit's latent-attention pooling and bias projection, Normalize) plus a saved ``truncate_dim``. It
reads a few small JSON files and imports neither torch nor transformers.

This module sits below the loaders: it takes an already-resolved folder path and imports nothing from
:mod:`embedkit.models.loading`, :mod:`~embedkit.models.onnx` or :mod:`~embedkit.models.submodel`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ModelShape", "read_shape", "read_max_positions"]

#: legacy sentence-transformers pooling flags (each active one adds a block of the token width)
_POOLING_FLAGS = ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                  "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
_MAX_CONFIG_BYTES = 4 << 20


@dataclass(frozen=True)
class ModelShape:
    """What a model's configuration says about its size.

    Attributes:
        layers: transformer layers (``num_hidden_layers``), None if unknown.
        hidden: the transformer's hidden size (the width ``--dim`` may cut down to), None if unknown.
        dim: the dimension of the sentence embeddings the model outputs, None if unknown (a module
            this reader does not know, an unreadable config).
    """

    layers: int | None
    hidden: int | None
    dim: int | None


def _read_json(path: Path):
    if not path.is_file() or path.stat().st_size > _MAX_CONFIG_BYTES:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _transformer_shape(folder: Path) -> tuple[int | None, int | None]:
    cfg = _read_json(folder / "config.json")
    if not isinstance(cfg, dict):
        return None, None
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]  # multimodal wrappers keep the text model's sizes here
    return _int(cfg.get("num_hidden_layers")), _int(cfg.get("hidden_size", cfg.get("d_model")))


def _pooling_dim(cfg: dict) -> int | None:
    width = _int(cfg.get("embedding_dimension", cfg.get("word_embedding_dimension")))
    if width is None:
        return None
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        n = 1
    elif isinstance(mode, list):
        n = len(mode)
    else:
        n = sum(bool(cfg.get(k)) for k in _POOLING_FLAGS)
    return width * n if n >= 1 else None


def _module_kind(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def read_shape(folder: str | os.PathLike) -> ModelShape | None:
    """The shape of the sentence-transformers (or plain Hugging Face) model in ``folder``.

    Args:
        folder: a local model folder, already resolved (e.g. by ``resolve_model``).

    Returns:
        A :class:`ModelShape` (any field None when the configs do not say), or None when ``folder``
        is not a folder or holds no readable transformer config.

    Example:
        >>> from embedkit.models.loading import default_model_path
        >>> read_shape(default_model_path())
        ModelShape(layers=6, hidden=384, dim=384)
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list):  # a plain Hugging Face folder: sentence-transformers pools to the hidden size
        layers, hidden = _transformer_shape(folder)
        return None if layers is None and hidden is None else ModelShape(layers, hidden, hidden)
    layers = hidden = dim = None
    known = True
    for i, mod in enumerate(modules):
        if not isinstance(mod, dict) or not isinstance(mod.get("type"), str):
            return None
        kind = _module_kind(mod["type"])
        sub = folder / str(mod.get("path") or "")
        cfg = _read_json(sub / "config.json")
        if i == 0:
            if kind != "Transformer":
                return None
            layers, hidden = _transformer_shape(sub)
            dim = hidden
        elif kind == "Normalize":
            continue
        elif kind == "Pooling":
            dim = _pooling_dim(cfg) if isinstance(cfg, dict) else None
        elif kind == "LatentAttentionPooling":
            dim = _int(cfg.get("embedding_dimension")) if isinstance(cfg, dict) else None
        elif kind == "Dense":
            dim = _int(cfg.get("out_features")) if isinstance(cfg, dict) else None
        elif kind == "BiasProjection":
            continue  # projects within the same space
        else:
            known = False
        if dim is None:
            known = False
        if not known:
            break
    if layers is None and hidden is None:
        return None
    if known and dim is not None:
        st = _read_json(folder / "config_sentence_transformers.json")
        cut = _int(st.get("truncate_dim")) if isinstance(st, dict) else None
        if cut is not None:
            dim = min(dim, cut)
    return ModelShape(layers, hidden, dim if known else None)


#: model types whose position ids start after the padding index (usable = max_position_embeddings - pad - 1)
_PADDED_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet", "data2vec-text")


def read_max_positions(folder: str | os.PathLike) -> int | None:
    """The longest input, in tokens, the transformer's absolute position embeddings allow.

    Read from the transformer's ``config.json`` (``max_position_embeddings``, less the padding offset
    of RoBERTa-style models); None when ``folder`` holds no readable config or the config names no
    such limit (relative or rotary positions without one).

    Example:
        >>> from embedkit.models.loading import default_model_path
        >>> read_max_positions(default_model_path())
        512
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    modules = _read_json(folder / "modules.json")
    sub = folder
    if isinstance(modules, list) and modules and isinstance(modules[0], dict):
        sub = folder / str(modules[0].get("path") or "")
    cfg = _read_json(sub / "config.json")
    if not isinstance(cfg, dict):
        return None
    if "hidden_size" not in cfg and isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]
    n = _int(cfg.get("max_position_embeddings"))
    if n is not None and cfg.get("model_type") in _PADDED_POSITIONS:
        pad = cfg.get("pad_token_id")
        n -= pad + 1 if isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0 else 2
    return n if n is not None and n >= 1 else None
