"""Fast CPU encoding with ONNX Runtime: ``backend="onnx"`` (float32) and ``backend="onnx-int8"``.

:func:`load_onnx_encoder` (what ``load_encoder(..., backend="onnx" | "onnx-int8")`` calls) exports a
sentence-transformers model with torch's own exporter (see :mod:`embedkit.models.onnx_export`), caches
the export beside the model, and returns an :class:`OnnxEncoder`: an object that encodes like a
``SentenceTransformer`` (``encode`` with batch size, prompts, normalisation, progress bar, ``tokenizer``,
``max_seq_length``, ``get_embedding_dimension``) and runs on onnxruntime alone. Once a model folder has
been exported, loading it again needs neither torch nor the model's Python code: only ``tokenizers``
and ``onnxruntime`` are imported.

``onnx-int8`` is onnxruntime's dynamic int8 quantization with per-channel weights and no reduce_range
(:data:`~embedkit.models.onnx_export.INT8_SETTINGS`, chosen by measurement; the numbers are there and in
docs/encoding.md). Its embeddings differ from float ones (cosine ~0.99), so its fingerprint — and the
embedding-cache namespace and index manifests keyed on it — differ from the torch model's; ``onnx``
(float32) gets its own fingerprint as well.

Batching: texts are tokenized once, sorted by token count (longest first) and cut into batches of at
most ``batch_size`` texts and at most ``token_budget`` padded tokens, so one long document does not pad a
batch of short ones; results come back in input order.

Example:
    .. code-block:: python

        from embedkit import load_encoder
        model = load_encoder(backend="onnx-int8")        # exported on first use, cached after
        model.encode(["hello world"], normalize_embeddings=True).shape   # (1, 384)
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit.errors import BackendError
from embedkit.models.identity import fingerprint, identity
from embedkit.models.onnx_export import (
    BACKENDS,
    EXPORT_OF,
    check_backend,
    default_export_root,
    ensure_export,
    export_folder_name,
    export_root_for,
    lookup_source,
    ort_version,
    record_source,
    source_digest,
    verify_export,
)
from embedkit.models.resolve import resolve_model
from embedkit.models.tokenizer import DEFAULT_TOKEN_BUDGET, FastTokenizer

__all__ = ["BACKENDS", "DEFAULT_TOKEN_BUDGET", "FastTokenizer", "OnnxEncoder", "default_threads", "describe",
           "export_info", "load_onnx_encoder", "onnx_encoder_from_model"]

logger = logging.getLogger(__name__)

def default_threads() -> int:
    """The cores this process may run on (``sched_getaffinity``; ``os.cpu_count()`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


class OnnxEncoder:
    """A sentence encoder running an embedkit ONNX export on onnxruntime (CPU).

    Build it with :func:`load_onnx_encoder` or :func:`onnx_encoder_from_model`; the constructor opens an
    export folder written by :func:`embedkit.models.onnx_export.ensure_export` and verifies it.

    Args:
        folder: the export folder.
        threads: onnxruntime intra-op threads; default :func:`default_threads` (the cores this process
            may use).
        token_budget: most padded tokens per batch (default 8192).
        meta: the folder's verified metadata (skips a second verification).

    Attributes:
        backend: ``"onnx"`` or ``"onnx-int8"``.
        fingerprint: 16 hex characters: the torch model's fingerprint, the backend and onnxruntime's version.
        source: the model folder or name the export was made from.
        prompts, default_prompt_name, similarity_fn_name, truncate_dim: as on a SentenceTransformer.

    Raises:
        BackendError: the folder is not a complete, intact export.
    """

    device = "cpu"

    def __init__(self, folder: str | os.PathLike, *, threads: int | None = None, token_budget: int | None = None,
                 meta: dict | None = None, runtime: str | None = None, precision: str = "fp32"):
        import onnxruntime as ort

        from embedkit.validation import check_positive_int

        self.export_dir = Path(folder)
        meta = meta if meta is not None else verify_export(self.export_dir)
        if meta is None:
            raise BackendError(f"ONNX export {str(self.export_dir)!r} is missing or damaged; load the model again "
                               "with load_encoder(..., backend=...) to rebuild it")
        self.meta = meta
        self.backend = meta["backend"]
        self.threads = default_threads() if threads is None else check_positive_int(threads, "threads")
        self.token_budget = (DEFAULT_TOKEN_BUDGET if token_budget is None
                             else check_positive_int(token_budget, "token_budget"))
        self.source = meta.get("source")
        self.prompts = dict(meta.get("prompts") or {})
        self.default_prompt_name = meta.get("default_prompt_name")
        self.similarity_fn_name = meta.get("similarity_fn_name") or "cosine"
        self.truncate_dim: int | None = None
        self._exported_max_length = int(meta["max_seq_length"])
        self._input_names = list(meta["input_names"])
        self._fast = FastTokenizer(self.export_dir / "tokenizer" / "tokenizer.json", self._exported_max_length,
                                   pad_id=meta.get("pad_id", 0), pad_side=meta.get("pad_side", "right"))
        self._hf_tokenizer = None
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if runtime == "openvino":  # OpenVINO compiles the float export (bf16 on CPUs that have it)
            from embedkit.models.openvino import OpenVinoSession, openvino_version

            self.backend = "openvino"
            self.session = OpenVinoSession(self.export_dir / "model.onnx", threads=self.threads, precision=precision)
            digest = f"{meta['fingerprint']}|openvino|ov{openvino_version()}|{precision}"
        else:
            self.session = ort.InferenceSession(str(self.export_dir / "model.onnx"), options,
                                                providers=["CPUExecutionProvider"])
            digest = f"{meta['fingerprint']}|{self.backend}|ort{ort_version()}"
        self.precision = precision
        self.fingerprint = hashlib.sha256(digest.encode()).hexdigest()[:16]
        ident = identity(self)
        ident.source = self.source
        ident.backend = self.backend
        ident.extra["onnx"] = {"export": str(self.export_dir), "torch_fingerprint": meta["fingerprint"],
                               "quantization": meta.get("quantization"), "threads": self.threads}
        ident.extra["precision"] = precision

    # --- SentenceTransformer-like surface ---------------------------------------------------------

    def __repr__(self) -> str:
        return (f"OnnxEncoder(source={self.source!r}, backend={self.backend!r}, dim={self.get_embedding_dimension()}, "
                f"max_seq_length={self.max_seq_length}, threads={self.threads})")

    @property
    def max_seq_length(self) -> int:
        return self._fast.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        from embedkit.validation import check_positive_int

        value = check_positive_int(value, "max_seq_length", maximum=self._exported_max_length)
        self._fast.max_length = value

    @property
    def tokenizer(self):
        """The model's Hugging Face tokenizer (loaded on first use; :meth:`encode` does not need it)."""
        if self._hf_tokenizer is None:
            from transformers import AutoTokenizer

            self._hf_tokenizer = AutoTokenizer.from_pretrained(str(self.export_dir / "tokenizer"))
        return self._hf_tokenizer

    def get_embedding_dimension(self) -> int:
        dim = int(self.meta["dimension"])
        return min(dim, self.truncate_dim) if self.truncate_dim else dim

    get_sentence_embedding_dimension = get_embedding_dimension

    def get_max_seq_length(self) -> int:
        return self.max_seq_length

    def eval(self):
        return self

    def to(self, device):
        if device is not None and str(device) != "cpu":
            raise BackendError(f"device {str(device)!r}: the {self.backend} backend runs on the CPU; "
                               "use backend='torch' for a GPU")
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The graph's inputs for ``texts`` (int64 numpy arrays, padded to the longest)."""
        feats = self._fast.pad(self._fast.encode(texts))
        return {n: feats[n] for n in self._input_names}

    preprocess = tokenize

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None:
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise BackendError(f"prompt_name {prompt_name!r}: not one of this model's prompts "
                                   f"{sorted(self.prompts)}")
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def batches(self, lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
        """Positions of the texts of each batch: longest first, at most ``batch_size`` texts and at most
        ``token_budget`` padded tokens (a single text longer than the budget gets a batch of its own)."""
        lengths = np.asarray(lengths)
        order = np.argsort(-lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            width = max(int(lengths[order[start]]), 1)  # the first of a batch is its longest
            size = max(1, min(batch_size, self.token_budget // width))
            out.append(order[start:start + size])
            start += size
        return out

    def encode(self, sentences, prompt_name: str | None = None, prompt: str | None = None, batch_size: int = 32,
               show_progress_bar: bool | None = None, output_value: str | None = "sentence_embedding",
               precision: str = "float32", convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               device: str | None = None, normalize_embeddings: bool = False, truncate_dim: int | None = None,
               **kwargs):
        """Embed ``sentences`` as ``SentenceTransformer.encode`` does.

        Returns:
            float32 array ``(n, dim)`` (a 1-D array for one string); a torch tensor with
            ``convert_to_tensor=True``; a list of 1-D arrays with ``convert_to_numpy=False``.

        Raises:
            BackendError: an option the ONNX backend does not support (``output_value`` other than
                ``"sentence_embedding"``, ``precision`` other than ``"float32"``, a GPU device, other
                keywords), or a prompt for a model whose pooling excludes prompt tokens.
        """
        from tqdm.auto import tqdm

        from embedkit.validation import check_positive_int

        if kwargs:
            raise BackendError(f"encode(): keyword(s) {sorted(kwargs)} are not supported by the {self.backend} "
                               "backend; use backend='torch'")
        if output_value != "sentence_embedding":
            raise BackendError(f"encode(output_value={output_value!r}): the {self.backend} backend returns "
                               "sentence embeddings only; use backend='torch'")
        if precision != "float32":
            raise BackendError(f"encode(precision={precision!r}): the {self.backend} backend returns float32; "
                               "quantize with embedkit.compression")
        self.to(device)
        batch_size = check_positive_int(batch_size, "batch_size")
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        prompt = self._resolve_prompt(prompt, prompt_name)
        if prompt:
            if self.meta.get("excludes_prompt"):
                raise BackendError(f"prompt {prompt[:30]!r}: this model's pooling excludes prompt tokens, which the "
                                   f"{self.backend} backend does not support; use backend='torch'")
            texts = [prompt + t for t in texts]
        dim = int(self.meta["dimension"])
        out = np.empty((len(texts), dim), dtype=np.float32)
        if texts:
            encodings = self._fast.encode(texts)
            plan = self.batches([len(e.ids) for e in encodings], batch_size)
            for rows in tqdm(plan, desc="Batches", disable=not show_progress_bar):
                feats = self._fast.pad([encodings[i] for i in rows])
                out[rows] = self.session.run(["sentence_embedding"], {n: feats[n] for n in self._input_names})[0]
        cut = truncate_dim if truncate_dim is not None else self.truncate_dim
        if cut is not None:
            out = out[:, :cut]
        if normalize_embeddings:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        out = np.ascontiguousarray(out, dtype=np.float32)
        if convert_to_tensor:
            import torch

            t = torch.from_numpy(out)
            return t[0] if single else t
        if not convert_to_numpy:
            rows = list(out)
            return rows[0] if single else rows
        return out[0] if single else out

    def encode_query(self, sentences, **kwargs):
        """:meth:`encode` with the model's ``"query"`` prompt (when it has one and no prompt is given)."""
        if "prompt" not in kwargs and "prompt_name" not in kwargs and self.prompts.get("query"):
            kwargs["prompt_name"] = "query"
        return self.encode(sentences, **kwargs)

    def encode_document(self, sentences, **kwargs):
        """:meth:`encode` with the model's ``"document"`` prompt (when it has one and no prompt is given)."""
        for name in ("document", "passage", "corpus"):
            if "prompt" not in kwargs and "prompt_name" not in kwargs and self.prompts.get(name):
                kwargs["prompt_name"] = name
                break
        return self.encode(sentences, **kwargs)

    def similarity(self, a, b) -> np.ndarray:
        """Pairwise similarity matrix (cosine, or dot product when the model says so), as numpy."""
        a, b = np.atleast_2d(np.asarray(a, np.float32)), np.atleast_2d(np.asarray(b, np.float32))
        if self.similarity_fn_name == "dot":
            return a @ b.T
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return a @ b.T


def _check_device(device, backend: str) -> None:
    if device is not None and str(device) != "cpu":
        raise BackendError(f"device {str(device)!r}: the {backend} backend runs on the CPU (onnxruntime); "
                           "use backend='torch' for a GPU")


def _check_precision(precision, backend: str) -> str:
    from embedkit.models.pipeline import check_precision

    precision = "fp32" if precision is None else check_precision(precision)
    if precision != "fp32" and backend != "openvino":
        raise BackendError(f"precision {precision!r}: the {backend} backend computes in float32{' and int8' if backend == 'onnx-int8' else ''}; "
                           "use --backend openvino or torch for half precision")
    return precision


def load_onnx_encoder(name_or_path: str | os.PathLike | None = None, *, backend: str = "onnx",
                      device: str | None = None, temperature: float | None = None, trust_remote_code: bool = False,
                      layers: int | None = None, dim: int | None = None, threads: int | None = None,
                      token_budget: int | None = None, export_root: str | os.PathLike | None = None,
                      precision: str | None = None) -> OnnxEncoder:
    """Load a sentence-transformers model as an :class:`OnnxEncoder` (exported and cached on first use).

    Args:
        name_or_path, temperature, trust_remote_code, layers, dim: as for
            :func:`embedkit.models.loading.load_encoder` (the modified torch model is what is exported).
        backend: ``"onnx"`` (float32), ``"onnx-int8"`` or ``"openvino"`` (OpenVINO on the float export).
        device: None or ``"cpu"``.
        precision: ``"fp32"`` (default); ``"bf16"`` (or ``"fp16"``) only with ``"openvino"``.
        threads: onnxruntime threads (default: the cores this process may use).
        token_budget: most padded tokens per batch.
        export_root: where exports live; default beside the model (``<folder>/.embedkit-onnx``), or
            ``$EMBEDKIT_CACHE/onnx`` when the model folder is read-only or a hub name.

    Raises:
        BackendError: unknown backend, a GPU device, or a model the exporter cannot handle.
        ModelNotFoundError: as :func:`~embedkit.models.loading.load_encoder`.
    """
    check_backend(backend)
    if backend == "torch":
        raise BackendError("load_onnx_encoder(backend='torch'): use load_encoder(backend='torch')")
    _check_device(device, backend)
    precision = _check_precision(precision, backend)
    runtime, backend = backend, EXPORT_OF[backend]
    target = resolve_model(name_or_path)
    local = Path(target).is_dir()
    root = Path(export_root) if export_root is not None else export_root_for(target if local else None)
    digest = None
    if local:
        options = {"layers": layers, "dim": dim, "temperature": temperature, "trust_remote_code": trust_remote_code}
        digest = source_digest(target, options)
        fp = lookup_source(root, digest)
        if fp is not None:
            folder = root / export_folder_name(fp, backend)
            meta = verify_export(folder, backend)
            if meta is not None:
                logger.info("using the cached ONNX export %s", folder)
                return OnnxEncoder(folder, threads=threads, token_budget=token_budget, meta=meta, runtime=runtime,
                                   precision=precision)
    from embedkit.models.st import load_st_encoder

    model = load_st_encoder(target, device="cpu", temperature=temperature, trust_remote_code=trust_remote_code,
                         layers=layers, dim=dim)
    fp = fingerprint(model)
    folder, meta = ensure_export(model, backend, root=root, source=target, fingerprint=fp)
    if digest is not None:
        record_source(root, digest, fp)
    return OnnxEncoder(folder, threads=threads, token_budget=token_budget, meta=meta, runtime=runtime,
                       precision=precision)


def onnx_encoder_from_model(model, backend: str = "onnx", *, threads: int | None = None,
                            token_budget: int | None = None,
                            export_root: str | os.PathLike | None = None) -> OnnxEncoder:
    """An :class:`OnnxEncoder` of an in-memory SentenceTransformer (e.g. after training or truncation).

    The export is keyed by the model's current fingerprint, so changed weights get a new export. It is
    cached beside the folder the model was loaded from when that is writable, else in
    ``$EMBEDKIT_CACHE/onnx``.
    """
    check_backend(backend)
    if backend == "torch":
        raise BackendError("onnx_encoder_from_model(backend='torch'): the model already is a torch model")
    source = identity(model).source
    root = Path(export_root) if export_root is not None else (
        export_root_for(source) if source and Path(source).is_dir() else default_export_root())
    folder, meta = ensure_export(model, EXPORT_OF[backend], root=root, source=source)
    return OnnxEncoder(folder, threads=threads, token_budget=token_budget, meta=meta, runtime=backend)


def export_info(encoder: OnnxEncoder) -> dict:
    """The export's metadata (without the file table), e.g. for a manifest or ``embedkit demo``."""
    return {k: v for k, v in encoder.meta.items() if k != "files"} | {"export_dir": str(encoder.export_dir),
                                                                       "fingerprint": encoder.fingerprint}


def describe(encoder) -> str:
    """One line naming the backend a model runs on (``"torch"``, ``"onnx"``, ``"onnx-int8 (per-channel int8)"``)."""
    backend = getattr(encoder, "backend", None) or "torch"
    if backend == "onnx-int8":
        return "onnx-int8 (onnxruntime, dynamic per-channel int8)"
    if backend == "onnx":
        return "onnx (onnxruntime, float32)"
    if backend == "openvino":
        return f"openvino (OpenVINO, {getattr(encoder, 'precision', 'fp32')})"
    return "torch"

