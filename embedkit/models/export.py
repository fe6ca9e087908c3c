"""Writing a (layers, dim) sub-model as a standalone sentence-transformers folder (``embedkit export``).

Above :mod:`embedkit.models.loading` (it loads the model it cuts); :mod:`embedkit.models.submodel`
holds the cutting itself and imports nothing that loads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from embedkit._io import atomic_directory, atomic_write_json, mark_output, prepare_output
from embedkit.models.loading import load_encoder
from embedkit.models.resolve import model_fingerprint, resolve_model
from embedkit.models.submodel import model_identity_extra, read_trained_sizes

__all__ = ["export_submodel"]

logger = logging.getLogger(__name__)


def export_submodel(model_path: str | os.PathLike | None, out: str | os.PathLike, *, layers: int | None = None,
                    dim: int | None = None, overwrite: bool = False, device: str | None = "cpu") -> Path:
    """Write a standalone sentence-transformers folder of the (layers, dim) sub-model of ``model_path``.

    The folder loads with plain ``SentenceTransformer(out)``; ``embedkit_submodel.json`` records the
    source and the size, and for a source trained by ``embedkit train`` with a Matryoshka / 2DMSE /
    Starbucks loss also its trained sizes and whether this size is one of them (``trained``; a size
    that is not gives an :class:`~embedkit.errors.UntrainedSizeWarning`). Written atomically; an
    existing folder is replaced only with ``overwrite`` and only if it is an embedkit model export.
    """

    target = prepare_output(out, "model", overwrite=overwrite,
                            inputs=[model_path] if model_path and Path(str(model_path)).exists() else ())
    model = load_encoder(model_path, device=device, layers=layers, dim=dim)
    info = dict(model_identity_extra(model))
    info.update(source=resolve_model(model_path), fingerprint=model_fingerprint(model))
    recorded = read_trained_sizes(info["source"])
    if recorded is not None:
        size = (info.get("layers"), info.get("dim"))
        info.update(trained_method=recorded["method"], trained_sizes=[list(x) for x in recorded["sizes"]],
                    trained=size in recorded["sizes"] or size == (info.get("full_layers"), info.get("full_dim")))
    with atomic_directory(target) as tmp:
        model.save(str(tmp))
        atomic_write_json(tmp / "embedkit_submodel.json", info)
        mark_output(tmp, "model")
    logger.info("exported a %s-layer, %s-dim sub-model to %s", info.get("layers"), info.get("dim"), target)
    return target
