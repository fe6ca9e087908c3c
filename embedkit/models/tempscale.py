"""TempScale: divide every self-attention softmax by a temperature (Zhou et al., ACL 2025, arXiv 2410.24200).

Long texts "collapse": their embeddings crowd together because self-attention acts as a low-pass
filter whose smoothing grows with length. TempScale replaces softmax(QK^T / sqrt(d)) with
softmax(QK^T / sqrt(d) / tau) in every self-attention layer; tau < 1 sharpens attention. It needs
no training.

How: by weight surgery. Scaling the query projection (weight and bias) by 1/tau scales every logit
QK^T by exactly 1/tau, so the model keeps using its fast attention kernels (SDPA) and a saved
model carries the repair with no custom code. This is exact for absolute-position encoders (BERT,
RoBERTa, XLM-R, DistilBERT, MiniLM) and for rotary-position models (the rotation is linear in q).
Models that normalise queries *after* the projection (QK-norm: Qwen3, Gemma3 / EmbeddingGemma,
OLMo-2) would undo a scaled projection, so there the scale goes into the query norm's gain instead
(``w / tau`` for ``w * n(q)`` norms, ``(1 + w) / tau - 1`` for Gemma's ``(1 + w) * n(q)`` norms — the
form is found by probing the module, not by its class name); the rotation that follows is linear,
so this is exact too. Models that soft-cap attention logits (``attn_logit_softcapping``, Gemma 2)
are refused: the cap is not linear in the logits.
Deviation from the reference code (which patches the softmax of BERT/T5 attention modules): models
with an *additive* position bias in the logits (T5, MPNet, DeBERTa relative attention) are refused,
because scaling q would not divide the bias; pass ``allow_inexact=True`` to scale them anyway.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from embedkit.errors import TempScaleError
from embedkit.models.identity import identity

__all__ = ["apply_tempscale", "TempScaleError", "find_query_projections", "save_tempscaled", "tempscale_of", "preserved_attention"]

_QUERY_NAMES = ("query", "q_lin", "q_proj")
_RELATIVE_HINTS = ("relative_attention_bias", "rel_attn", "rel_embeddings", "relative_attention")



def _check_tau(tau) -> float:
    try:
        t = float(tau)
    except (TypeError, ValueError) as e:
        raise TempScaleError(f"temperature {tau!r}: not a number") from e
    if not math.isfinite(t) or t <= 0:
        raise TempScaleError(f"temperature {tau!r}: must be a finite number > 0 (1 = unchanged, < 1 sharpens attention)")
    return t


def find_query_projections(model) -> list[tuple[str, object, str]]:
    """(name, module, kind) of every self-attention query scale point found in ``model``.

    kind is ``"linear"`` (a separate query ``nn.Linear``), ``"qk_norm"`` (the norm applied to the
    projected queries in QK-norm models — scaling the projection would be undone there) or
    ``"gpt2_c_attn"`` (GPT-2's fused Conv1D whose first third of output columns is the query).
    """
    import torch.nn as nn

    found = []
    for name, mod in model.named_modules():
        cls = type(mod).__name__
        if "Cross" in cls:
            continue
        qnorm = getattr(mod, "q_norm", None)
        if isinstance(qnorm, nn.Module) and isinstance(getattr(qnorm, "weight", None), nn.Parameter) \
                and "attention" in (cls.lower() + name.lower()):
            found.append((f"{name}.q_norm" if name else "q_norm", qnorm, "qk_norm"))
            continue
        for attr in _QUERY_NAMES:
            sub = getattr(mod, attr, None)
            if isinstance(sub, nn.Linear) and "attention" in (cls.lower() + name.lower()):
                found.append((f"{name}.{attr}" if name else attr, sub, "linear"))
        if cls in ("GPT2Attention",) and hasattr(mod, "c_attn") and not getattr(mod, "is_cross_attention", False):
            found.append((f"{name}.c_attn", mod.c_attn, "gpt2_c_attn"))
    return found


def _scale_qk_norm(norm, t: float) -> None:
    """Scale the output of a query norm by 1/t through its gain, after probing which form it has."""
    import torch

    w0 = norm.weight.detach().clone()
    probe = torch.randn(3, w0.shape[-1], generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    probe = probe.to(dtype=norm.weight.dtype, device=norm.weight.device)
    with torch.no_grad():
        y0 = norm(probe).float()
        for candidate in (w0 / t, (1.0 + w0) / t - 1.0):
            norm.weight.copy_(candidate)
            if torch.allclose(norm(probe).float(), y0 / t, rtol=1e-3, atol=1e-5):
                return
        norm.weight.copy_(w0)
    raise TempScaleError(
        f"query norm {type(norm).__name__}: its output is neither w * n(q) nor (1 + w) * n(q), so TempScale "
        "cannot scale it exactly; this model family is not supported")


def _softcapped(model) -> str | None:
    for name, mod in model.named_modules():
        cfg = getattr(mod, "config", None)
        cap = getattr(cfg, "attn_logit_softcapping", None)
        if cap:
            return f"{name or 'model'} (attn_logit_softcapping={cap})"
    return None


def _relative_bias_modules(model) -> list[str]:
    out = []
    for name, mod in model.named_modules():
        if any(h in name for h in _RELATIVE_HINTS):
            out.append(name)
        cfg = getattr(mod, "config", None)
        pet = getattr(cfg, "position_embedding_type", None)
        if isinstance(pet, str) and pet not in ("absolute", "rotary"):
            out.append(f"{name or 'model'} (position_embedding_type={pet})")
    return out


def apply_tempscale(model, tau: float, *, allow_inexact: bool = False):
    """Divide every self-attention logit of ``model`` by ``tau``, in place; returns ``model``.

    Args:
        model: a SentenceTransformer or any torch module (e.g. a transformers model).
        tau: temperature > 0; 1 leaves the model unchanged. Applying twice multiplies the
            temperatures (the cumulative value is :func:`tempscale_of`).
        allow_inexact: scale models with additive relative-position biases anyway.

    Raises:
        TempScaleError: tau not a finite positive number; no self-attention layer found (e.g. a
            static-embedding model); a relative-position-bias model without ``allow_inexact``.

    Example:
        .. code-block:: python

            from embedkit import load_encoder
            model = load_encoder(temperature=0.9)   # same as apply_tempscale(load_encoder(), 0.9)

    References:
        Zhou et al. "Length-Induced Embedding Collapse in PLM-based Models." ACL 2025, arXiv 2410.24200.
    """
    import torch

    t = _check_tau(tau)
    projections = find_query_projections(model)
    if not projections:
        raise TempScaleError(
            f"model {type(model).__name__}: no self-attention layers found (looked for a query projection named "
            f"{', '.join(_QUERY_NAMES)} or GPT-2 c_attn); TempScale applies to transformer encoders only"
        )
    rel = _relative_bias_modules(model)
    if rel and not allow_inexact:
        raise TempScaleError(
            f"model {type(model).__name__}: attention uses an additive relative-position bias ({rel[0]}); scaling the "
            "query would not divide that bias, so TempScale would be inexact. Pass allow_inexact=True to scale anyway"
        )
    capped = _softcapped(model)
    if capped:
        raise TempScaleError(
            f"model {type(model).__name__}: attention logits are soft-capped ({capped}); the cap is not linear, "
            "so dividing the logits by a temperature cannot be done by weight surgery")
    if t != 1.0:
        with torch.no_grad():
            for _, lin, kind in projections:
                if kind == "qk_norm":
                    _scale_qk_norm(lin, t)
                elif kind == "linear":
                    lin.weight.mul_(1.0 / t)
                    if lin.bias is not None:
                        lin.bias.mul_(1.0 / t)
                else:  # GPT-2 Conv1D: weight (in, 3*out), bias (3*out,)
                    d = lin.weight.shape[1] // 3
                    lin.weight[:, :d].mul_(1.0 / t)
                    lin.bias[:d].mul_(1.0 / t)
    ident = identity(model)
    ident.tempscale = tempscale_of(model) * t
    ident.extra["tempscale_layers"] = len(projections)
    # the fingerprint follows the in-place change by itself (see embedkit.models.identity)
    return model


def tempscale_of(model) -> float:
    """The cumulative temperature applied to ``model`` by :func:`apply_tempscale` (1.0 if none)."""
    return float(identity(model).tempscale)


def save_tempscaled(model, path: str | os.PathLike) -> Path:
    """Save a TempScale-repaired SentenceTransformer folder (atomically) with ``embedkit_tempscale.json``.

    The scaled weights are the repair, so the folder loads with plain sentence-transformers.
    """
    from embedkit._io import atomic_directory, mark_output

    path = Path(path)
    with atomic_directory(path) as tmp:
        model.save(str(tmp))
        (tmp / "embedkit_tempscale.json").write_text(json.dumps(
            {"temperature": tempscale_of(model), "layers_scaled": identity(model).extra.get("tempscale_layers"),
             "method": "query projection scaled by 1/temperature (TempScale, arXiv 2410.24200)"}, indent=2) + "\n")
        mark_output(tmp, "model")
    return path


class preserved_attention:
    """Context manager: snapshot the query projections and restore them bit-exactly on exit.

    Example:
        .. code-block:: python

            with preserved_attention(model):
                apply_tempscale(model, 0.8)
                model.encode(["a long text ..."])
    """

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self._state = [(lin, lin.weight.detach().clone(),
                        None if getattr(lin, "bias", None) is None else lin.bias.detach().clone())
                       for _, lin, _ in find_query_projections(self.model)]
        self._tau = identity(self.model).tempscale
        return self

    def reset(self):
        """Put the original weights back now (also done on exit)."""
        import torch

        with torch.no_grad():
            for lin, w, b in self._state:
                lin.weight.copy_(w)
                if b is not None:
                    lin.bias.copy_(b)
        identity(self.model).tempscale = self._tau

    def __exit__(self, *exc):
        self.reset()
        return False
