"""Physically smaller sub-models of a Matryoshka / Starbucks encoder: the first L layers, the first D dims.

A model trained with :class:`~embedkit.training.losses.starbucks.StarbucksLoss` (or Matryoshka2dLoss)
works at every (layers, dims) size of its ladder. :func:`truncate_encoder` turns it into a model that
*is* that size: transformer layers beyond L are deleted (so encoding costs about L/N of the full
model), and the pooled embedding is cut to its first D dimensions and renormalised. The result is a
plain sentence-transformers model — Transformer, Pooling, a Dense layer holding the D x H identity
slice (ST's own module, so ``SentenceTransformer(folder)`` loads an exported folder without embedkit),
and Normalize — so :func:`embedkit.models.export.export_submodel` writes a standalone folder.

**The layer-L sentence embedding** (one definition, used by training, :func:`encode_ladder`,
:func:`truncate_encoder` and export): the model's pooling (and any head modules) applied to the
token states the first L layers produce *as the L-layer network runs*, cut to the first D values
and L2-normalised. For a backbone with a final normalisation after its layer stack (pre-norm
decoders: Llama / Qwen3 ``norm``, GPT-2 ``ln_f``; ModernBERT ``final_norm``) that norm is applied
at every layer, exactly as the truncated model applies it after its last kept layer. Hugging Face
returns intermediate ``hidden_states`` without it (only the last one has it), so the training-side
functions here apply it themselves (:func:`every_layer_normed`). BERT-style (post-norm) models have
no final norm, and nothing changes for them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

from embedkit.errors import EmbedkitError, UntrainedSizeWarning
from embedkit.models.resolve import resolve_model
from embedkit.models.shape import read_shape

__all__ = ["truncate_encoder", "layer_stack", "final_norm", "every_layer_normed", "unwrap_model", "model_depth",
           "model_width", "model_shape", "layer_sentence_embeddings", "encode_ladder", "SIZES_FILE",
           "read_trained_sizes", "check_trained_size"]

logger = logging.getLogger(__name__)

#: written by ``embedkit train`` next to a model trained with a Matryoshka / 2DMSE / Starbucks loss:
#: ``{"method": ..., "sizes": [[layers, dims], ...]}``, the (layers, dims) sizes the loss trained
SIZES_FILE = "embedkit_sizes.json"

# attribute names of the normalisation a pre-norm backbone applies after its last layer
_FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


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


def final_norm(auto_model):
    """The normalisation module a backbone applies after its layer stack, or None.

    Found beside the layer stack under one of the usual names: Llama / Qwen3 / Mistral ``norm``,
    GPT-2 / Falcon / BLOOM ``ln_f``, OPT / GPT-NeoX ``final_layer_norm``, Phi ``final_layernorm``,
    ModernBERT ``final_norm``. BERT-style models (a LayerNorm inside every layer, none after the
    stack) have none.
    """
    import torch.nn as nn

    parent = layer_stack(auto_model)[0]
    for name in _FINAL_NORM_NAMES:
        mod = getattr(parent, name, None)
        if isinstance(mod, nn.Module):
            return mod
    return None


@contextmanager
def every_layer_normed(model):
    """Within the block, the Transformer module's ``all_layer_embeddings`` follow the sub-model definition.

    Entry L becomes ``final_norm(h_L)`` (what the first-L-layers model outputs) for every L below
    the depth, the embeddings entry (L = 0, which sentence-transformers' ``AdaptiveLayerLoss``
    trains too) included; the last entry already is the model's output. A no-op for backbones
    without a final norm (BERT). ``model`` may be wrapped (DistributedDataParallel,
    ``torch.compile``). Gradients flow through the norm.

    The Transformer module's ``forward`` is replaced for the duration (sentence-transformers calls
    the Hugging Face model's ``forward`` directly, so a module hook would not fire), which is also
    what sentence-transformers' ``AdaptiveLayerLoss`` caches its layer states from.
    """
    base = unwrap_model(model)
    tr = _transformer(base)
    norm = final_norm(tr.auto_model)
    if norm is None or getattr(tr, "_embedkit_every_layer_normed", False):
        yield
        return
    depth = len(layer_stack(tr.auto_model)[2])
    original = tr.forward
    had_own = "forward" in tr.__dict__

    def forward(features, *args, **kwargs):
        out = original(features, *args, **kwargs)
        hs = out.get("all_layer_embeddings")
        if hs is not None and len(hs) == depth + 1:
            out["all_layer_embeddings"] = (*(norm(h) for h in hs[:-1]), hs[-1])
        return out

    tr.forward = forward
    tr._embedkit_every_layer_normed = True
    try:
        yield
    finally:
        if had_own:
            tr.forward = original
        else:
            del tr.forward
        tr._embedkit_every_layer_normed = False


def unwrap_model(model):
    """The SentenceTransformer inside DistributedDataParallel (``.module``) / ``torch.compile`` (``_orig_mod``)
    wrappers (sentence-transformers' trainer puts the wrapped model into a loss's ``model``)."""
    seen = 0
    while not hasattr(model, "__getitem__") or not hasattr(model, "tokenize"):
        inner = getattr(model, "_orig_mod", None)
        inner = getattr(model, "module", None) if inner is None else inner
        if inner is None or seen > 8:
            raise EmbedkitError(f"model {type(model).__name__}: not a SentenceTransformer, nor a "
                                "DistributedDataParallel / torch.compile wrapper around one")
        model, seen = inner, seen + 1
    return model


def _transformer(model):
    first = model[0]
    if not hasattr(first, "auto_model"):
        raise EmbedkitError(f"model: its first module is {type(first).__name__}, not a transformer; "
                            "sub-models need a sentence-transformers Transformer module")
    return first


def model_depth(model) -> int:
    """Number of transformer layers of a SentenceTransformer (or a wrapper around one)."""
    return len(layer_stack(_transformer(unwrap_model(model)).auto_model)[2])


def model_width(model) -> int:
    """Width of the pooled embedding before any truncation (the transformer's hidden size)."""
    return int(_transformer(unwrap_model(model)).auto_model.config.hidden_size)


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

    The embedding of the result equals the full model's layer-``layers`` sentence embedding (see the
    module docstring: the final norm of a pre-norm backbone applies after the last kept layer), cut to
    the first ``dim`` values and L2-normalised. A model trained by ``embedkit train`` with a
    Matryoshka / 2DMSE / Starbucks loss records its trained sizes (:data:`SIZES_FILE`); a size off
    that list gives an :class:`~embedkit.errors.UntrainedSizeWarning` (it works, but it was never
    trained, so it is usually much worse than the nearest trained size).

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
    from embedkit.models.identity import identity

    check_trained_size(identity(model).source, L, D, full=(depth, width))
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


def read_trained_sizes(path) -> dict | None:
    """The trained sizes recorded in a model folder (:data:`SIZES_FILE`): ``{"method": str, "sizes":
    [(layers, dims), ...]}``, or None when the folder records none (a model not trained by embedkit
    with a Matryoshka-style loss, a hub name, an unreadable file)."""
    if path is None:
        return None
    p = Path(str(path)) / SIZES_FILE
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        return {"method": str(raw["method"]), "sizes": [(int(a), int(b)) for a, b in raw["sizes"]]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_trained_size(path, layers: int, dim: int, *, full: tuple[int, int] | None = None) -> bool:
    """Warn (:class:`~embedkit.errors.UntrainedSizeWarning`) when (``layers``, ``dim``) is not a size
    the model at ``path`` was trained at; True when it is, or when the model records no sizes.

    ``full`` is the model's (depth, width): the full size always counts as trained.
    """
    info = read_trained_sizes(path)
    if info is None or (layers, dim) in info["sizes"] or (full is not None and (layers, dim) == tuple(full)):
        return True
    ladder = ", ".join(f"--layers {a} --dim {b}" for a, b in info["sizes"])
    hint = ("; mrl:D in a compression spec cuts dims at full depth, also untrained below the full width"
            if "starbucks" in info["method"] else "")
    warnings.warn(UntrainedSizeWarning(
        f"model {path}: {layers} layers x {dim} dims is not a size its {info['method']} training covered, so it is "
        f"an untrained cut (usually far worse than a trained size); trained sizes: {ladder}{hint}"), stacklevel=3)
    return False


def _trailing_normalize(modules) -> int:
    n = 0
    for m in reversed(modules):
        if type(m).__name__ != "Normalize":
            break
        n += 1
    return n


def layer_sentence_embeddings(model, features: dict, layers, *, normalize: bool = True) -> dict:
    """Sentence embeddings of the given layers from ONE forward pass: the layer-L sentence embedding of
    the module docstring for every L in ``layers``. Gradients flow (used by StarbucksLoss).

    ``model`` may be wrapped (DistributedDataParallel, ``torch.compile``): the forward goes through
    the wrapper, so DDP synchronises the gradients; the head modules are then applied to every
    layer's token states. ``normalize=False`` returns them before any trailing Normalize module
    (what the reference's KL term sees: it trains models without one); with ``normalize=True`` (the
    default) they are L2-normalised when the model ends with Normalize, as the model outputs them.
    """
    import torch.nn.functional as F

    base = unwrap_model(model)
    transformer = _transformer(base)
    config = transformer.auto_model.config
    previous = config.output_hidden_states
    config.output_hidden_states = True
    try:
        with every_layer_normed(base):
            out = model(dict(features))  # through the wrapper: DDP synchronises the gradients
    finally:
        config.output_hidden_states = previous
    hidden = out["all_layer_embeddings"]  # [embeddings output, layer 1, ..., layer depth]
    heads = [base[i] for i in range(1, len(base))]
    n_norm = _trailing_normalize(heads)
    heads = heads[: len(heads) - n_norm]
    result = {}
    for layer in layers:
        feats = {k: v for k, v in out.items() if k not in ("all_layer_embeddings", "sentence_embedding")}
        feats["token_embeddings"] = hidden[layer]
        for module in heads:
            feats = module(feats)
        emb = feats["sentence_embedding"]
        result[layer] = F.normalize(emb, p=2, dim=-1) if normalize and n_norm else emb
    return result


def encode_ladder(model, texts, ladder, *, batch_size: int = 64, show_progress: bool = False) -> dict:
    """Embeddings of ``texts`` at every (layers, dims) size of ``ladder`` from one pass of the full model.

    Returns ``{(layers, dims): float32 array (n, dims)}``, each row cut and L2-normalised — what the
    sub-model :func:`truncate_encoder` would return, at the cost of one encode.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from embedkit.models.pipeline import autocast, iter_batches, precision_of

    texts = list(texts)
    layers = sorted({int(layer) for layer, _ in ladder})
    parts: dict = {}
    model.eval()
    device = next(model.parameters()).device
    # the one encode pipeline: tokenized ahead in a thread, length-sorted token-budget batches, autocast
    with torch.no_grad(), autocast(device, precision_of(model)), \
            tqdm(total=len(texts), disable=not show_progress, desc="encode ladder") as bar:
        for pos, feats in iter_batches(model, texts, batch_size=batch_size, device=device):
            for layer, e in layer_sentence_embeddings(model, feats, layers).items():
                if layer not in parts:
                    parts[layer] = np.empty((len(texts), e.shape[1]), np.float32)
                parts[layer][pos] = e.float().cpu().numpy()
            bar.update(len(pos))
    out = {}
    for layer, d in ladder:
        E = parts[int(layer)][:, : int(d)]
        out[(int(layer), int(d))] = (E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out
