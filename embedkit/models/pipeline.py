"""The one encode pipeline of torch encoders: tokenization ahead of the forward, token-budget batches,
half precision on GPUs.

:func:`embedkit.models.loading.load_encoder` (``backend="torch"``) returns a
:class:`PipelinedSentenceTransformer`: a ``SentenceTransformer`` whose ``encode`` (and so ``encode_query``,
``encode_document``, every caller in embedkit: the embedding cache, shards, Ray workers, indexes,
evaluation, the server's batches) runs text through :func:`run_pipeline`:

* texts are sorted by length (characters first, then tokens inside each chunk) and cut into batches of
  at most ``batch_size`` texts and at most ``token_budget`` padded tokens (on CUDA the budget alone
  sizes a batch, so short sentences fill the GPU); results come back in input order;
* background threads tokenize the next chunks (the model's own ``preprocess``: prompts, truncation
  and padding exactly as sentence-transformers does them; the fast tokenizer releases the GIL) into a
  bounded queue while the main thread runs the forward: one thread on CPU (the forward needs the
  cores), several on CUDA (:func:`default_workers`), each with its own copy of the tokenizer;
* on CUDA, batches are copied from pinned host memory with ``non_blocking=True`` and embeddings stay
  on the GPU until the call returns (one copy back, no per-batch synchronisation);
* ``precision`` (``fp32``, ``fp16``, ``bf16``) runs the forward under ``torch.autocast``; weights stay
  float32 (so the model's fingerprint, and the index checks keyed on it, do not change) and outputs
  are float32. On CPU the default is float32, identical to sentence-transformers' own ``encode`` (to
  1e-5: only padding widths differ).

What the pipeline does not handle (``output_value`` other than ``"sentence_embedding"``, inputs that
are not strings) goes to sentence-transformers' own loop, under the same autocast.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import numpy as np

from embedkit.errors import BackendError

# PipelinedSentenceTransformer is built on first use (module __getattr__): it needs sentence-transformers
__all__ = ["PRECISIONS", "PipelinedSentenceTransformer", "autocast", "check_precision", "default_precision",  # noqa: F822
           "default_workers", "enable_pipeline", "iter_batches", "plan_batches", "precision_of", "run_pipeline"]

logger = logging.getLogger(__name__)

#: Compute precisions of ``--precision`` / ``load_encoder(precision=...)``.
PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
#: Texts tokenized per step of a tokenizer thread.
CHUNK = 512
#: Tokenized chunks waiting for the forward at most.
PREFETCH = 4


def check_precision(value) -> str:
    """Return ``value`` if it is one of :data:`PRECISIONS`, else raise a one-line :class:`BackendError`."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise BackendError(f"precision {value!r}: unknown; use one of {', '.join(PRECISIONS)}")
    return value


def default_precision(device) -> str:
    """``bf16`` on a CUDA GPU that supports it, else ``fp32`` (CPU, MPS, older GPUs)."""
    import torch

    d = torch.device(device) if device is not None else torch.device("cpu")
    if d.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def precision_of(model) -> str:
    """The compute precision ``model`` encodes with (``"fp32"`` unless set by :func:`enable_pipeline`)."""
    from embedkit.models.identity import identity

    return identity(model).extra.get("precision", "fp32")


def autocast(device, precision: str):
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for fp32)."""
    import torch

    check_precision(precision)
    if precision == "fp32":
        return nullcontext()
    d = torch.device(device)
    return torch.autocast(device_type=d.type, dtype=getattr(torch, _DTYPES[precision]))


def plan_batches(lengths: Sequence[int], batch_size: int | None, token_budget: int) -> list[np.ndarray]:
    """Positions of each batch: longest first, at most ``batch_size`` texts (None: no cap) and at most
    ``token_budget`` padded tokens (a text longer than the budget gets a batch of its own)."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    out, start = [], 0
    while start < len(order):
        width = max(int(lengths[order[start]]), 1)  # the first of a batch is its longest
        size = max(1, token_budget // width)
        if batch_size is not None:
            size = min(size, batch_size)
        out.append(order[start:start + size])
        start += size
    return out


def _slice(features: dict, rows: np.ndarray, width: int, n: int, left: bool, pin: bool) -> dict:
    """The features of ``rows`` of a tokenized chunk of ``n`` texts, cut to ``width`` tokens."""
    import torch

    index = torch.from_numpy(rows)
    out = {}
    for key, value in features.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == n:
            value = value.index_select(0, index)
            if value.ndim == 2:
                value = value[:, -width:] if left else value[:, :width]
            value = value.contiguous()
            if pin:
                value = value.pin_memory()
        out[key] = value
    return out


def _preprocessor(model, worker: int):
    """``preprocess`` for tokenizer thread ``worker``: the model's own for the first, a copy of its input
    module with its own tokenizer for the others (one fast tokenizer used from two threads at once can
    fail with "Already borrowed"); None when the model's input module cannot be copied that way."""
    if worker == 0:
        return model.preprocess
    import copy

    first = model[0] if len(model) else None
    if first is None or not hasattr(first, "processor") or not hasattr(first, "preprocess"):
        return None
    clone = copy.copy(first)  # shares the weights; only the processor (tokenizer) is the clone's own
    clone.processor = copy.deepcopy(first.processor)
    return clone.preprocess


def _producer(preprocess, left, texts, order, chunks, batch_size, budget, prompt, kwargs, pin, out_q, stop):
    """Tokenizer thread: tokenize its chunks of length-sorted texts, cut them into batches, queue them."""
    try:
        for start, end in chunks:
            if stop.is_set():
                return
            pos = order[start:end]
            features = preprocess([texts[i] for i in pos], prompt=prompt, **kwargs)
            mask = features.get("attention_mask")
            lengths = (mask.sum(1).numpy() if mask is not None
                       else np.full(len(pos), features["input_ids"].shape[1]))
            for rows in plan_batches(lengths, batch_size, budget):
                item = (pos[rows], _slice(features, rows, int(lengths[rows].max()), len(pos), left, pin))
                while not stop.is_set():
                    try:
                        out_q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        out_q.put(None)
    except BaseException as e:  # handed to the consumer, which raises it
        out_q.put(e)


def default_workers(device) -> int:
    """Tokenizer threads: 1 on CPU (the forward needs the cores), on CUDA the cores less one, at most 8."""
    import os

    if str(device).startswith("cuda"):
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
            cores = os.cpu_count() or 1
        return max(1, min(8, cores - 1))
    return 1


def iter_batches(model, texts: Sequence[str], *, batch_size: int, device, prompt: str | None = None,
                 token_budget: int | None = None, workers: int | None = None,
                 **kwargs) -> Iterator[tuple[np.ndarray, dict]]:
    """Yield ``(positions, features on device)`` for every batch of ``texts``, tokenized ahead in threads.

    ``positions`` index into ``texts``; batches come roughly longest first (in the order the tokenizer
    threads finish them). ``workers`` tokenizer threads (default :func:`default_workers`) take chunks in
    turn. On CUDA the features are copied from pinned memory with ``non_blocking=True``. Used by
    :func:`run_pipeline` and by :func:`embedkit.models.submodel.encode_ladder`.
    """
    import torch

    device = torch.device(device)
    cuda = device.type == "cuda"
    max_len = int(getattr(model, "max_seq_length", None) or 512)
    if token_budget is None:
        token_budget = max(batch_size, 128 if cuda else 1) * max_len
    cap = None if cuda else batch_size  # on a GPU the budget alone sizes a batch
    chunk = CHUNK
    order = np.argsort([-len(t) for t in texts], kind="stable")
    spans = [(s, min(s + chunk, len(order))) for s in range(0, len(order), chunk)]
    n_workers = max(1, min(workers or default_workers(device), len(spans)))
    preprocessors = [p for p in (_preprocessor(model, w) for w in range(n_workers)) if p is not None]
    left = getattr(getattr(model, "tokenizer", None), "padding_side", "right") == "left"
    out_q: queue.Queue = queue.Queue(maxsize=PREFETCH * 4)
    stop = threading.Event()
    threads = [threading.Thread(target=_producer, name=f"embedkit-tokenize-{w}", daemon=True,
                                args=(pre, left, texts, order, spans[w::len(preprocessors)], cap, token_budget, prompt,
                                      kwargs, cuda, out_q, stop))
               for w, pre in enumerate(preprocessors)]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            item = out_q.get()
            if item is None:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            pos, features = item
            yield pos, {k: v.to(device, non_blocking=cuda) if isinstance(v, torch.Tensor) else v
                        for k, v in features.items()}
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


def run_pipeline(model, texts: Sequence[str], *, batch_size: int = 32, device=None, precision: str | None = None,
                 prompt: str | None = None, normalize_embeddings: bool = False, truncate_dim: int | None = None,
                 save_to_cpu: bool = True, show_progress_bar: bool = False, token_budget: int | None = None,
                 workers: int | None = None, **kwargs):
    """Sentence embeddings of ``texts`` (a float32 torch tensor ``(n, dim)``, rows in input order).

    Args:
        model: a SentenceTransformer.
        texts: strings.
        batch_size: most texts per batch on CPU (on CUDA the token budget alone sizes batches).
        device: where the forward runs (default: the model's device).
        precision: ``fp32``, ``fp16`` or ``bf16`` (autocast); default: the model's (:func:`precision_of`).
        prompt: prepended to every text (by the model's ``preprocess``, as sentence-transformers does).
        normalize_embeddings: L2-normalise the rows (after ``truncate_dim``).
        truncate_dim: keep the first ``truncate_dim`` dimensions.
        save_to_cpu: return a CPU tensor (else on ``device``).
        token_budget: most padded tokens per batch (default ``batch_size x max_seq_length`` on CPU,
            ``max(batch_size, 128) x max_seq_length`` on CUDA).
        workers: tokenizer threads (default :func:`default_workers`: 1 on CPU, up to 8 on CUDA).
        kwargs: passed to the model's ``preprocess`` and forward (e.g. ``task``).
    """
    import torch
    from tqdm.auto import tqdm

    precision = check_precision(precision if precision is not None else precision_of(model))
    device = torch.device(device) if device is not None else model.device
    texts = list(texts)
    if not texts:
        return torch.tensor([], device=device)
    model.eval()
    out = None
    bar = tqdm(total=len(texts), desc="Batches", disable=not show_progress_bar, unit="text")
    with torch.inference_mode(), autocast(device, precision), bar:
        for pos, features in iter_batches(model, texts, batch_size=batch_size, device=device, prompt=prompt,
                                          token_budget=token_budget, workers=workers, **kwargs):
            emb = model(features, **kwargs)["sentence_embedding"]
            if truncate_dim is not None:
                emb = emb[:, :truncate_dim]
            emb = emb.float()
            if normalize_embeddings:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            if out is None:
                out = torch.empty((len(texts), emb.shape[1]), dtype=torch.float32, device=device)
            out[torch.from_numpy(pos).to(device, non_blocking=True)] = emb
            bar.update(len(pos))
    return out.cpu() if save_to_cpu else out


def _pipeline_class():
    from sentence_transformers import SentenceTransformer

    class PipelinedSentenceTransformer(SentenceTransformer):
        """A ``SentenceTransformer`` whose text encoding runs through :func:`run_pipeline`.

        Everything else is sentence-transformers' own: ``encode`` resolves prompts, ``truncate_dim``,
        output quantization (its ``precision=`` argument, which is not the compute precision) and the
        output type, then calls ``_inference``, which this class routes through the pipeline.
        """

        def _inference(self, inputs, *, prompt=None, batch_size=32, show_progress_bar=False,
                       output_value="sentence_embedding", save_to_cpu=True, normalize_embeddings=False,
                       truncate_dim=None, device=None, **kwargs):
            resolve = getattr(self, "_resolve_inference_device", None)
            dev = resolve(device) if resolve is not None else (device or self.device)
            if output_value == "sentence_embedding" and all(isinstance(t, str) for t in inputs) \
                    and getattr(dev, "type", str(dev)) in ("cpu", "cuda", "mps"):
                if device is not None and str(dev) != str(self.device):
                    self.to(dev)
                return run_pipeline(self, inputs, batch_size=batch_size, device=dev, prompt=prompt,
                                    normalize_embeddings=normalize_embeddings, truncate_dim=truncate_dim,
                                    save_to_cpu=save_to_cpu, show_progress_bar=show_progress_bar, **kwargs)
            with autocast(dev, precision_of(self)):
                return super()._inference(inputs, prompt=prompt, batch_size=batch_size,
                                          show_progress_bar=show_progress_bar, output_value=output_value,
                                          save_to_cpu=save_to_cpu, normalize_embeddings=normalize_embeddings,
                                          truncate_dim=truncate_dim, device=device, **kwargs)

    PipelinedSentenceTransformer.__module__ = __name__
    PipelinedSentenceTransformer.__qualname__ = "PipelinedSentenceTransformer"  # what pickle looks up
    # A model's fingerprint hashes the class name of every module (embedkit.models.identity): keeping
    # "SentenceTransformer" keeps every fingerprint, embedding cache and index manifest valid.
    PipelinedSentenceTransformer.__name__ = "SentenceTransformer"
    return PipelinedSentenceTransformer


def __getattr__(name):  # the class needs sentence-transformers: built on first use
    if name == "PipelinedSentenceTransformer":
        cls = _pipeline_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def enable_pipeline(model, precision: str | None = None):
    """Route ``model.encode`` through the pipeline (in place) and set its compute precision.

    Args:
        model: a ``SentenceTransformer`` (its class becomes :class:`PipelinedSentenceTransformer`; a
            subclass of it is left as it is: its own ``encode`` wins).
        precision: ``fp32``, ``fp16``, ``bf16``; None = :func:`default_precision` of the model's device.

    Returns:
        the same model.

    Raises:
        BackendError: an unknown precision.
    """
    from sentence_transformers import SentenceTransformer

    from embedkit.models.identity import identity

    precision = default_precision(model.device) if precision is None else check_precision(precision)
    if precision == "fp16" and model.device.type == "cpu":  # works (an index built on a GPU reloads), but slowly
        logger.warning("precision fp16 on the CPU is slower than fp32 (few CPUs compute in fp16); use bf16 or fp32")
    cls = globals().get("PipelinedSentenceTransformer") or __getattr__("PipelinedSentenceTransformer")
    if type(model) is SentenceTransformer:
        model.__class__ = cls
    identity(model).extra["precision"] = precision
    return model
