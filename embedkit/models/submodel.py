"""Physically smaller sub-models of a Matryoshka / Starbucks encoder: the first L layers, the first D dims.

A model trained with :class:`~embedkit.training.losses.starbucks.StarbucksLoss` (or Matryoshka2dLoss)
works at every (layers, dims) size of its ladder. :func:`truncate_encoder` turns it into a model that
*is* that size: transformer layers beyond L are deleted (so encoding costs about L/N of the full
model), and the pooled embedding is cut to its first D dimensions and renormalised. The result is a
plain sentence-transformers model — Transformer, Pooling, a Dense layer holding the D x H identity
slice (ST's own module, so ``SentenceTransformer(folder)`` loads an exported folder without embedkit),
and Normalize — so :func:`embedkit.models.export.export_submodel` writes a standalone folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from embedkit.errors import EmbedkitError
from embedkit.models.resolve import resolve_model
from embedkit.models.shape import read_shape

__all__ = ["truncate_encoder", "layer_stack", "model_depth", "model_width", "model_shape",
           "layer_sentence_embeddings", "encode_ladder"]

logger = logging.getLogger(__name__)


def layer_stack(auto_model):
    """``(parent, attribute name, ModuleList)`` of the transformer blocks of a Hugging Face model.

    Found as the ModuleList whose length equals ``config.num_hidden_layers`` (BERT's
    ``encoder.layer``, GPT-2's ``h``, Llama's ``layers``, ...).
    """
    import torch.nn as nn

    n = getattr(auto_model.config, "num_hidden_layers", None)
    for _, mod in auto_model.named_modules():
        for attr, child in mod.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == n and n:
                return mod, attr, child
    raise EmbedkitError(
        f"model {type(auto_model).__name__}: cannot find its stack of {n} transformer layers; layer truncation "
        "supports BERT-, GPT-2-, Llama-style models")


def _transformer(model):
    first = model[0]
    if not hasattr(first, "auto_model"):
        raise EmbedkitError(f"model: its first module is {type(first).__name__}, not a transformer; "
                            "sub-models need a sentence-transformers Transformer module")
    return first


def model_depth(model) -> int:
    """Number of transformer layers of a SentenceTransformer."""
    return len(layer_stack(_transformer(model).auto_model)[2])


def model_width(model) -> int:
    """Width of the pooled embedding before any truncation (the transformer's hidden size)."""
    return int(_transformer(model).auto_model.config.hidden_size)


def model_shape(name_or_path) -> tuple[int, int] | None:
    """``(layers, width)`` of a local sentence-transformers folder read from its configs (no weights
    loaded, by :func:`embedkit.models.shape.read_shape`), or None when it cannot be read (a hub name,
    an unusual layout)."""
    try:
        shape = read_shape(resolve_model(name_or_path))
    except (OSError, EmbedkitError):
        return None
    if shape is None or shape.layers is None or shape.hidden is None:
        return None
    return shape.layers, shape.hidden


def truncate_encoder(model, *, layers: int | None = None, dim: int | None = None):
    """Cut a SentenceTransformer to its first ``layers`` transformer layers and ``dim`` output dims, in place.

    The embedding of the result equals the full model's layer-``layers`` hidden state, pooled as the
    model pools, cut to the first ``dim`` values and L2-normalised.

    Args:
        model: a SentenceTransformer whose modules are Transformer, Pooling and optionally Normalize.
        layers: layers to keep (1..depth); None keeps all.
        dim: output dimensions to keep (1..hidden size); None keeps all (still renormalised).

    Returns:
        the same model object, now smaller.

    Raises:
        EmbedkitError: layers or dim out of range, or a module layout this does not support.

    Example:
        .. code-block:: python

            small = truncate_encoder(load_encoder("starbucks-run/final"), layers=2, dim=64)
            small.encode(["a query"]).shape   # (1, 64)
    """
    import torch
    import torch.nn as nn

    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense, Normalize, Pooling

    tr = _transformer(model)
    parent, attr, stack = layer_stack(tr.auto_model)
    depth, width = len(stack), int(tr.auto_model.config.hidden_size)
    L = depth if layers is None else layers
    D = width if dim is None else dim
    if isinstance(L, bool) or not isinstance(L, int) or not 1 <= L <= depth:
        raise EmbedkitError(f"layers={layers!r}: must be a whole number from 1 to the model's depth {depth}")
    if isinstance(D, bool) or not isinstance(D, int) or not 1 <= D <= width:
        raise EmbedkitError(f"dim={dim!r}: must be a whole number from 1 to the model's width {width}")
    rest = [model[i] for i in range(1, len(model))]
    kinds = [type(m).__name__ for m in rest]
    if not rest or not isinstance(rest[0], Pooling) or any(k not in ("Normalize", "Dense") for k in kinds[1:]) \
            or "Dense" in kinds[1:] and (D < width or L < depth):
        raise EmbedkitError(f"model modules {['Transformer', *kinds]}: sub-models support Transformer, Pooling "
                            "[, Normalize] (an embedkit sub-model cannot be cut again)")
    if L < depth:
        setattr(parent, attr, nn.ModuleList(list(stack)[:L]))
        tr.auto_model.config.num_hidden_layers = L
        for key in ("layer_types",):  # per-layer config lists (Gemma3, Qwen3) must match the new depth
            val = getattr(tr.auto_model.config, key, None)
            if isinstance(val, list):
                setattr(tr.auto_model.config, key, val[:L])
    # rebuild the head: Pooling, [identity slice to D dims], Normalize
    while len(model) > 2:
        del model[len(model) - 1]
    if D < width:
        w = torch.zeros(D, width)
        w[torch.arange(D), torch.arange(D)] = 1.0
        model.append(Dense(width, D, bias=False, activation_function=nn.Identity(), init_weight=w))
    model.append(Normalize())
    model.to(next(tr.auto_model.parameters()).device)
    from embedkit.models.identity import identity

    ident = identity(model)
    ident.extra["submodel"] = {"layers": L, "dim": D, "full_layers": depth, "full_dim": width}
    return model


def model_identity_extra(model) -> dict:
    from embedkit.models.identity import identity

    return identity(model).extra.get("submodel", {})


def read_submodel_info(path: str | os.PathLike) -> dict | None:
    p = Path(path) / "embedkit_submodel.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def layer_sentence_embeddings(model, features: dict, layers) -> dict:
    """Sentence embeddings of the given layers from ONE transformer forward: the model's own pooling
    (and normalisation) applied to each layer's hidden states. Gradients flow (used by StarbucksLoss)."""
    transformer = _transformer(model)
    config = transformer.auto_model.config
    previous = config.output_hidden_states
    config.output_hidden_states = True
    try:
        out = transformer(dict(features))
    finally:
        config.output_hidden_states = previous
    hidden = out["all_layer_embeddings"]  # [embeddings output, layer 1, ..., layer depth]
    heads = [model[i] for i in range(1, len(model))]
    result = {}
    for layer in layers:
        feats = {k: v for k, v in out.items() if k != "all_layer_embeddings"}
        feats["token_embeddings"] = hidden[layer]
        for module in heads:
            feats = module(feats)
        result[layer] = feats["sentence_embedding"]
    return result


def encode_ladder(model, texts, ladder, *, batch_size: int = 64, show_progress: bool = False) -> dict:
    """Embeddings of ``texts`` at every (layers, dims) size of ``ladder`` from one pass of the full model.

    Returns ``{(layers, dims): float32 array (n, dims)}``, each row cut and L2-normalised — what the
    sub-model :func:`truncate_encoder` would return, at the cost of one encode.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    texts = list(texts)
    layers = sorted({int(layer) for layer, _ in ladder})
    order = np.argsort([-len(t) for t in texts], kind="stable")  # length-sorted batches pad less
    parts = {layer: [] for layer in layers}
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in tqdm(range(0, len(texts), batch_size), disable=not show_progress, desc="encode ladder"):
            batch = [texts[j] for j in order[i:i + batch_size]]
            tok = model.preprocess if hasattr(model, "preprocess") else model.tokenize
            feats = {k: v.to(device) if hasattr(v, "to") else v for k, v in tok(batch).items()}
            for layer, e in layer_sentence_embeddings(model, feats, layers).items():
                parts[layer].append(e.float().cpu().numpy())
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    out = {}
    for layer, d in ladder:
        E = np.concatenate(parts[int(layer)])[inverse][:, : int(d)]
        out[(int(layer), int(d))] = (E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out
