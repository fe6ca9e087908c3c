"""The sentence-transformers (torch) loader: ``load_encoder(..., backend="torch")``.

:func:`load_st_encoder` loads a local folder, the offline default model or a hub name as a
``SentenceTransformer``, restores bidirectional attention, cuts a sub-model (``layers``/``dim``) and
applies TempScale. :mod:`embedkit.models.loading` dispatches here for ``backend="torch"``, and the ONNX
backend uses it to build the torch model it exports.
"""

from __future__ import annotations

import os
from pathlib import Path

from embedkit.errors import ModelNotFoundError
from embedkit.models.identity import identity
from embedkit.models.resolve import check_device, is_offline, resolve_model

__all__ = ["EMBEDKIT_MODULE_CLASSES", "load_st_encoder"]


# Module classes embedkit itself defines and saves into sentence-transformers folders. sentence-transformers 6
# imports a module class outside its own namespace only with trust_remote_code=True; embedkit trusts its own
# installed code (never code shipped inside a model folder), so it loads folders whose extra modules are all
# listed here without that flag — and refuses the flag's wider scope for everything else.
EMBEDKIT_MODULE_CLASSES = (
    "embedkit.models.pooling.LatentAttentionPooling",
    "embedkit.debias.sentence.BiasProjection",
)


def _only_embedkit_modules(folder: Path) -> bool:
    """True when a local ST folder's custom modules are all embedkit's own and no config asks for hub code."""
    import json

    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return False
    types = [m.get("type", "") for m in modules if isinstance(m, dict)]
    custom = [t for t in types if not t.startswith("sentence_transformers.")]
    if not custom or any(t not in EMBEDKIT_MODULE_CLASSES for t in custom):
        return False
    for cfg in folder.rglob("config.json"):  # transformers' remote code is declared by an auto_map
        try:
            if "auto_map" in json.loads(cfg.read_text()):
                return False
        except (OSError, ValueError):
            return False
    return True


def load_st_encoder(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | None = None,
    temperature: float | None = None,
    trust_remote_code: bool = False,
    layers: int | None = None,
    dim: int | None = None,
    threads: int | None = None,
):
    """Load a sentence-transformers (torch) encoder; see :func:`embedkit.models.loading.load_encoder`.

    Returns:
        sentence_transformers.SentenceTransformer

    Raises:
        ModelNotFoundError: missing local path, or a hub name while offline / unreachable.
    """
    if threads is not None:
        import torch

        from embedkit.validation import check_positive_int

        torch.set_num_threads(check_positive_int(threads, "threads"))
    from sentence_transformers import SentenceTransformer

    try:  # the per-weight loading bar of transformers is noise for a 100-tensor model
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    target = resolve_model(name_or_path)
    is_local = Path(target).exists()
    if not is_local and is_offline():
        raise ModelNotFoundError(
            f"model {target!r} is not a local folder and the hub is offline (HF_HUB_OFFLINE=1); "
            "pass a local sentence-transformers folder, or omit --model to use the default "
            "all-MiniLM-L6-v2 that ships with embedkit"
        )
    check_device(device)
    trust = trust_remote_code or (is_local and _only_embedkit_modules(Path(target)))
    try:
        model = SentenceTransformer(target, device=device, trust_remote_code=trust)
    except (OSError, ValueError) as e:
        if is_local:
            raise ModelNotFoundError(f"could not load a sentence-transformers model from {target!r}: {e}") from e
        raise ModelNotFoundError(
            f"could not load model {target!r} from the hub ({type(e).__name__}); if you are offline, "
            "pass a local folder or omit --model to use the default all-MiniLM-L6-v2"
        ) from e
    identity(model).source = target
    first = model[0] if len(model) else None
    if first is not None and hasattr(first, "auto_model"):
        from embedkit.models.bidirectional import is_bidirectional, make_bidirectional

        if is_bidirectional(first.auto_model):  # saved as bidirectional: the per-layer flags are not saved
            make_bidirectional(first.auto_model)
    if layers is not None or dim is not None:
        from embedkit.models.submodel import truncate_encoder

        truncate_encoder(model, layers=layers, dim=dim)
    if temperature is not None and float(temperature) != 1.0:
        from embedkit.models.tempscale import apply_tempscale

        apply_tempscale(model, float(temperature))
    return model
