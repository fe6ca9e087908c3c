"""Export a sentence-transformers model to ONNX (float32 or dynamic int8) and keep it in a checksummed cache.

The export is the whole sentence-transformers pipeline — Transformer, Pooling (including embedkit's
:class:`~embedkit.models.pooling.LatentAttentionPooling`), Dense, Normalize and the sub-model heads of
:mod:`embedkit.models.submodel` — traced by torch's own exporter (``torch.onnx.export(dynamo=True)``)
into one graph from the tokenizer's tensors to the sentence embedding, with dynamic batch and
sequence axes.

Cache layout: one folder per export, named ``<model fingerprint>-<backend>-ort<onnxruntime version>-v<format>``,
holding ``model.onnx``, ``tokenizer/`` (the model's own tokenizer files) and ``embedkit-onnx.json``
(settings plus the sha256 of every file). Exports live *beside the model* in ``<model folder>/.embedkit-onnx/``
when that folder is writable, else under ``$EMBEDKIT_CACHE/onnx`` (default ``~/.cache/embedkit/onnx``).
Every folder is written with :func:`embedkit._io.atomic_directory` and verified (sizes and sha256) before
each use: a truncated or altered file makes the folder count as absent, so it is exported again,
never used. ``sources/`` maps a cheap digest of a model folder (file names, sizes, modification times
and the load options) to its fingerprint, so a second load finds its export without loading torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import io
import json
import logging
import os
import warnings
from pathlib import Path

from embedkit.errors import BackendError

__all__ = ["BACKENDS", "EXPORT_FORMAT", "EXPORT_OF", "INT8_SETTINGS", "META_FILE", "check_backend", "default_export_root",
           "ensure_export", "export_folder_name", "export_onnx", "export_root_for", "quantize_int8",
           "source_digest", "verify_export", "lookup_source", "record_source"]

logger = logging.getLogger(__name__)

#: Backend names accepted by :func:`embedkit.models.loading.load_encoder`.
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")
#: The export each ONNX-based backend runs (OpenVINO compiles the float32 export).
EXPORT_OF = {"onnx": "onnx", "onnx-int8": "onnx-int8", "openvino": "onnx"}
#: Bumped whenever the layout or the graph contract of an export changes (old folders are then ignored).
EXPORT_FORMAT = 1
META_FILE = "embedkit-onnx.json"
LOCAL_DIR = ".embedkit-onnx"
#: onnxruntime ``quantize_dynamic`` settings of ``onnx-int8``, chosen by measurement on a 2-core AMD EPYC
#: (AVX2 + FMA; /proc/cpuinfo also lists avx512_vnni), all-MiniLM-L6-v2, 64-96 SciFact abstracts, batch 32, 256 tokens, 2 threads:
#: per-channel signed int8 weights without reduce_range gave mean cosine 0.9945 (min 0.992) to float;
#: per-tensor 0.934, per-tensor + reduce_range 0.757, per-channel + reduce_range 0.993 (and slower);
#: restricting quantization to MatMul/Gemm changed nothing (Gather/embeddings are not quantized anyway).
INT8_SETTINGS = {"per_channel": True, "reduce_range": False, "weight_type": "QInt8"}
_TENSOR_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def check_backend(backend) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`, else raise a one-line :class:`BackendError`."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise BackendError(f"backend {backend!r}: unknown; use one of {', '.join(BACKENDS)}")
    return backend


def ort_version() -> str:
    return md.version("onnxruntime")


def default_export_root() -> Path:
    """``$EMBEDKIT_CACHE/onnx`` (default ``~/.cache/embedkit/onnx``), beside the embedding cache."""
    return Path(os.environ.get("EMBEDKIT_CACHE") or Path.home() / ".cache" / "embedkit") / "onnx"


def _writable_dir(folder: Path) -> bool:
    try:
        (folder / LOCAL_DIR).mkdir(exist_ok=True)
        probe = folder / LOCAL_DIR / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def export_root_for(source: str | os.PathLike | None) -> Path:
    """Where exports of a model loaded from ``source`` live: ``<source>/.embedkit-onnx`` when ``source`` is a
    writable local folder, else :func:`default_export_root` (read-only folders, hub names, in-memory models)."""
    if source:
        p = Path(source)
        if p.is_dir() and _writable_dir(p):
            return p / LOCAL_DIR
    return default_export_root()


def export_folder_name(fingerprint: str, backend: str) -> str:
    return f"{fingerprint}-{backend}-ort{ort_version()}-v{EXPORT_FORMAT}"


# --- cheap source digest: find an export without loading torch ---------------------------------

def source_digest(folder: str | os.PathLike, options: dict) -> str:
    """Digest of a model folder's file names, sizes and modification times plus the load ``options``,
    embedkit's, torch's and onnxruntime's versions (the export folder itself is skipped)."""
    from embedkit import __version__

    h = hashlib.sha256()
    root = Path(folder)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    versions = {k: _version(k) for k in ("torch", "transformers", "sentence-transformers", "onnxruntime")}
    h.update(json.dumps({"options": options, "embedkit": __version__, **versions}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:32]


def _version(pkg: str) -> str:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return ""


def lookup_source(root: Path, digest: str) -> str | None:
    """The fingerprint recorded for a source digest, or None."""
    try:
        fp = json.loads((root / "sources" / f"{digest}.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return fp if isinstance(fp, str) and len(fp) == 16 else None


def record_source(root: Path, digest: str, fingerprint: str) -> None:
    from embedkit._io import atomic_write_json

    try:
        atomic_write_json(root / "sources" / f"{digest}.json", {"fingerprint": fingerprint})
    except OSError as e:  # only a shortcut; never fatal
        logger.debug("could not record the source digest in %s: %s", root, e)


# --- verification --------------------------------------------------------------------------------

def verify_export(folder: str | os.PathLike, backend: str | None = None) -> dict | None:
    """The metadata of a complete, intact export folder, or None (missing, other format/backend/onnxruntime,
    a file missing, truncated or altered: sizes and sha256 are checked)."""
    from embedkit._io import recover_directory, sha256_file

    folder = Path(folder)
    with contextlib.suppress(OSError):
        recover_directory(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
        files = meta["files"]
        if meta.get("format") != EXPORT_FORMAT or meta.get("onnxruntime") != ort_version():
            return None
        if backend is not None and meta.get("backend") != backend:
            return None
        if not isinstance(files, dict) or "model.onnx" not in files:
            return None
        for rel, info in files.items():
            p = folder / rel
            if p.stat().st_size != info["size"] or sha256_file(p) != info["sha256"]:
                logger.warning("ONNX export %s: %s is damaged (size or sha256 differ); exporting again", folder, rel)
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def _file_table(folder: Path) -> dict:
    from embedkit._io import sha256_file

    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != META_FILE:
            out[str(p.relative_to(folder))] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return out


# --- export ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet():
    """Silence the exporter's and quantizer's progress lines and warnings (they print to stdout/root logger)."""
    names = ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "onnx_ir", "")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)


def _probe_texts(max_len: int) -> list[str]:
    return ["Hello World!", "a cat sat on the mat", "Ünïcode café — naïve résumé, 3.14 ≥ 2",
            " ".join(["supercalifragilistic words"] * max(4, max_len))]


def _wrapper(model, names):
    import torch

    class _SentenceGraph(torch.nn.Module):
        def __init__(self, st, input_names):
            super().__init__()
            self.st = st
            self.input_names = list(input_names)

        def forward(self, *tensors):
            features = dict(zip(self.input_names, tensors))
            features["modality"] = "text"
            for module in self.st:
                features = module(features)
            return features["sentence_embedding"]

    return _SentenceGraph(model, names).eval()


def _module_kinds(model) -> list[str]:
    return [type(m).__name__ for m in model]


def _excludes_prompt(model) -> bool:
    return any(getattr(m, "include_prompt", True) is False for m in model)


def export_onnx(model, folder: str | os.PathLike, *, source: str | None = None) -> dict:
    """Export a SentenceTransformer's whole pipeline to ``folder/model.onnx`` (float32) with its tokenizer.

    Checks the graph against torch on probe texts (max |difference| <= 1e-4) and that the saved
    tokenizer reproduces sentence-transformers' tokens (padding, truncation at ``max_seq_length``).

    Returns:
        the metadata dict (without the file table).

    Raises:
        BackendError: a module or input the exporter cannot handle, a slow (non-``tokenizers``) tokenizer,
            or a graph whose output differs from torch's.
    """
    import numpy as np
    import torch

    folder = Path(folder)
    kinds = _module_kinds(model)
    what = f"model {source or type(model).__name__} ({' + '.join(kinds)})"
    tok = getattr(model, "tokenizer", None)
    if tok is None or not getattr(tok, "is_fast", False) or not hasattr(tok, "backend_tokenizer"):
        raise BackendError(f"{what}: the ONNX backend needs a fast (tokenizers) tokenizer; use backend='torch'")
    max_len = int(model.max_seq_length or tok.model_max_length)
    model = model.to("cpu").eval()
    probes = _probe_texts(max_len)
    with torch.inference_mode():
        feats = model.preprocess(probes)
    names = [k for k, v in feats.items() if isinstance(v, torch.Tensor)]
    unsupported = [n for n in names if n not in _TENSOR_INPUTS]
    if unsupported:
        raise BackendError(f"{what}: model inputs {unsupported} are not supported by the ONNX backend; "
                           "use backend='torch'")
    graph = _wrapper(model, names)
    args = tuple(feats[n] for n in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(graph, args, str(folder / "model.onnx"), input_names=names,
                              output_names=["sentence_embedding"], dynamic_shapes=(tuple({0: batch, 1: seq}
                                                                                         for _ in names),),
                              dynamo=True, optimize=True, external_data=n_bytes > (1800 << 20), verbose=False)
    except Exception as e:  # the exporter raises many types; report one line
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise BackendError(f"{what}: torch.onnx could not export it ({type(e).__name__}: {first}); "
                           "use backend='torch'") from e
    # the saved tokenizer must give sentence-transformers' tokens
    tok.save_pretrained(str(folder / "tokenizer"))
    from embedkit.models.tokenizer import FastTokenizer

    fast = FastTokenizer(folder / "tokenizer" / "tokenizer.json", max_len, pad_id=tok.pad_token_id or 0,
                         pad_side=getattr(tok, "padding_side", "right"))
    ours = fast.pad(fast.encode(probes))
    for n in names:
        theirs = feats[n].numpy()
        if ours[n].shape != theirs.shape or not np.array_equal(ours[n], theirs):
            raise BackendError(f"{what}: its tokenizer gives different {n} outside sentence-transformers "
                               "(custom pre-processing?); use backend='torch'")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: ours[n] for n in names})[0]
    with torch.inference_mode():
        want = model(dict(feats))["sentence_embedding"].float().numpy()
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= 1e-4:
        raise BackendError(f"{what}: the ONNX graph differs from torch by {diff:.3g} on probe texts "
                           "(a module the exporter traced wrongly); use backend='torch'")
    return {
        "format": EXPORT_FORMAT,
        "input_names": names,
        "max_seq_length": max_len,
        "dimension": int(want.shape[1]),
        "pad_id": int(tok.pad_token_id or 0),
        "pad_side": str(getattr(tok, "padding_side", "right")),
        "prompts": dict(getattr(model, "prompts", {}) or {}),
        "default_prompt_name": getattr(model, "default_prompt_name", None),
        "excludes_prompt": _excludes_prompt(model),
        "similarity_fn_name": getattr(model, "similarity_fn_name", None) or "cosine",
        "modules": kinds,
        "max_abs_diff_to_torch": diff,
        "torch": _version("torch"),
        "onnxruntime": ort_version(),
    }


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Dynamic int8 quantization of ``src`` (a float ONNX file) into ``dst`` with :data:`INT8_SETTINGS`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(src), str(dst), per_channel=INT8_SETTINGS["per_channel"],
                         reduce_range=INT8_SETTINGS["reduce_range"],
                         weight_type=getattr(QuantType, INT8_SETTINGS["weight_type"]))


def ensure_export(model, backend: str, *, root: str | os.PathLike | None = None, source: str | None = None,
                  fingerprint: str | None = None) -> tuple[Path, dict]:
    """``(folder, metadata)`` of a verified export of ``model`` for ``backend``; exported (and quantized) if needed.

    ``onnx-int8`` quantizes the float export, which is exported (and cached) first when absent.
    """
    import shutil

    from embedkit._io import atomic_directory, atomic_write_json
    from embedkit.models.identity import fingerprint as torch_fingerprint

    check_backend(backend)
    if backend == "torch":
        raise BackendError("backend 'torch' has no ONNX export; use 'onnx' or 'onnx-int8'")
    fp = fingerprint or torch_fingerprint(model)
    root = Path(root) if root is not None else export_root_for(source)
    target = root / export_folder_name(fp, backend)
    meta = verify_export(target, backend)
    if meta is not None:
        return target, meta
    if backend == "onnx-int8":
        float_dir, _ = ensure_export(model, "onnx", root=root, source=source, fingerprint=fp)
        meta = json.loads((float_dir / META_FILE).read_text())
        logger.info("quantizing %s to int8 (per-channel=%s, reduce-range=%s)", float_dir.name,
                    INT8_SETTINGS["per_channel"], INT8_SETTINGS["reduce_range"])
        with atomic_directory(target) as tmp:
            quantize_int8(float_dir / "model.onnx", tmp / "model.onnx")
            shutil.copytree(float_dir / "tokenizer", tmp / "tokenizer")
            meta.update(backend=backend, quantization=INT8_SETTINGS, fingerprint=fp, source=source,
                        files=_file_table(tmp))
            atomic_write_json(tmp / META_FILE, meta)
    else:
        logger.info("exporting %s to ONNX in %s", source or type(model).__name__, target)
        with atomic_directory(target) as tmp:
            meta = export_onnx(model, tmp, source=source)
            meta.update(backend=backend, quantization=None, fingerprint=fp, source=source, files=_file_table(tmp))
            atomic_write_json(tmp / META_FILE, meta)
    meta = verify_export(target, backend)
    if meta is None:  # pragma: no cover - a disk that loses writes
        raise BackendError(f"ONNX export {target}: written but does not verify; check the disk")
    return target, meta
