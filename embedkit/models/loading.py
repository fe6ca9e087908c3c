"""Loading encoders: ``load_encoder`` is the one dispatcher on ``backend=`` (and ``layers=``/``dim=``).

``backend="torch"`` goes to :mod:`embedkit.models.st` (sentence-transformers), ``"onnx"`` and
``"onnx-int8"`` to :mod:`embedkit.models.onnx`. Resolving names, the offline switches, device checks and
fingerprints live one level lower, in :mod:`embedkit.models.resolve` (re-exported here, so
``from embedkit.models.loading import resolve_model`` keeps working). Also :func:`load_causal_lm` (CHES).
"""

from __future__ import annotations

import os
from pathlib import Path

from embedkit.errors import ModelNotFoundError
from embedkit.models.identity import identity
from embedkit.models.resolve import (
    DEFAULT_MODEL_NAME,
    OFFLINE_VARIABLES,
    check_device,
    default_model_path,
    is_offline,
    model_backend,
    model_description,
    model_fingerprint,
    model_load_options,
    model_weights_fingerprint,
    resolve_model,
)

__all__ = ["DEFAULT_MODEL_NAME", "OFFLINE_VARIABLES", "check_device", "default_model_path", "is_offline",
           "load_causal_lm", "load_encoder", "model_backend", "model_description", "model_fingerprint",
           "model_load_options", "model_weights_fingerprint", "resolve_model"]


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
    precision: str | None = None,
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
        precision: compute precision ``"fp32"``, ``"fp16"`` or ``"bf16"``; None = ``bf16`` on a CUDA GPU that
            supports it, else ``fp32``. torch runs the forward under autocast (weights stay float32);
            ``backend="openvino"`` computes in bf16 on CPUs that have it; the onnxruntime backends take fp32
            only. It is part of the embedding-cache key and of an index's recorded load options.

    Returns:
        sentence_transformers.SentenceTransformer (a :class:`~embedkit.models.pipeline.PipelinedSentenceTransformer`:
        ``encode`` runs through :mod:`embedkit.models.pipeline`), or an ONNX/OpenVINO encoder with the same
        ``encode``.

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
    from embedkit.models.pipeline import check_precision

    check_backend(backend)  # one-line BackendError for unknown names
    if precision is not None:
        check_precision(precision)  # before anything loads
    if backend != "torch":
        from embedkit.models.onnx import load_onnx_encoder

        return load_onnx_encoder(name_or_path, backend=backend, device=device, temperature=temperature,
                                 trust_remote_code=trust_remote_code, layers=layers, dim=dim, threads=threads,
                                 precision=precision)
    from embedkit.models.pipeline import enable_pipeline
    from embedkit.models.st import load_st_encoder

    return enable_pipeline(load_st_encoder(name_or_path, device=device, temperature=temperature,
                                           trust_remote_code=trust_remote_code, layers=layers, dim=dim,
                                           threads=threads), precision)


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
