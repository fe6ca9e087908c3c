"""Model identity: where a model came from and a fingerprint of its weights that cannot go stale.

embedkit keys its embedding cache and index manifests on a fingerprint of a model's weights. It used
to be cached as an attribute patched onto the model, which code changing weights in place had to
remember to clear — and a stale fingerprint makes the cache return old vectors. Here the identity
lives in one small object per model, held in a weak registry (nothing is patched onto the model),
and the cached fingerprint is tied to a *state key*: every parameter's and buffer's name, shape,
storage pointer and torch version counter, plus the module structure. In-place changes (``mul_``
under ``no_grad``, ``copy_``, ``load_state_dict``, optimizer steps), replaced tensors and added or
removed modules all change that key, so the fingerprint is recomputed. Writes through ``.data``
bypass torch's version counter: after such a write call :func:`forget` (or avoid ``.data``).
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelIdentity", "identity", "fingerprint", "forget"]


@dataclass
class ModelIdentity:
    """What embedkit knows about one loaded model.

    Attributes:
        source: the folder or hub name it was loaded from (None if built in memory).
        backend: the inference backend (``"torch"``).
        tempscale: cumulative TempScale temperature applied in place (1.0 if none).
        extra: free-form facts other modules record (e.g. the number of layers TempScale scaled).
    """

    source: str | None = None
    backend: str = "torch"
    tempscale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    _fingerprint: str | None = field(default=None, repr=False)
    _state_key: int | None = field(default=None, repr=False)


_REGISTRY: weakref.WeakKeyDictionary[Any, ModelIdentity] = weakref.WeakKeyDictionary()


def identity(model) -> ModelIdentity:
    """The :class:`ModelIdentity` of ``model`` (created empty on first use)."""
    ident = _REGISTRY.get(model)
    if ident is None:
        ident = ModelIdentity()
        _REGISTRY[model] = ident
    return ident


def _state_key(model) -> int:
    parts = [type(m).__name__ for m in model.modules()]
    for name, t in model.state_dict(keep_vars=True).items():
        parts.append((name, tuple(t.shape), str(t.dtype), t.data_ptr(), t._version))
    return hash(tuple(parts))


def _compute(model) -> str:
    import torch

    h = hashlib.sha256()
    # architecture: the class of every submodule (not repr(), which may hold memory addresses)
    for module in model.modules():
        h.update(type(module).__name__.encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(model) -> str:
    """A short, stable identity of ``model``'s weights and architecture (16 hex characters).

    Recomputed whenever the weights or the module structure changed since the last call.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> a = fingerprint(m)
        >>> with torch.no_grad():
        ...     _ = m.weight.mul_(2)
        >>> fingerprint(m) != a
        True
    """
    if not hasattr(model, "state_dict"):  # non-torch encoders (embedkit.models.onnx.OnnxEncoder) carry their own
        fp = getattr(model, "fingerprint", None)
        if not isinstance(fp, str):
            raise TypeError(f"{type(model).__name__}: not a torch module and has no 'fingerprint' string")
        return fp
    ident = identity(model)
    key = _state_key(model)
    if ident._fingerprint is None or ident._state_key != key:
        ident._fingerprint = _compute(model)
        ident._state_key = key
    return ident._fingerprint


def forget(model) -> None:
    """Drop the cached fingerprint (needed only after writes through ``tensor.data``)."""
    ident = identity(model)
    ident._fingerprint = None
    ident._state_key = None
