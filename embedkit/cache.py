"""Embedding cache: every text is encoded once per model.

Embeddings are stored under ``$EMBEDKIT_CACHE`` (default ``~/.cache/embedkit``) in a folder per
*namespace* (model fingerprint + the settings that change the output, such as max sequence
length and prompt), as append-only shards of two ``.npy`` files each: ``NNNNNN.vecs.npy`` (float32)
and ``NNNNNN.keys.npy`` (16-byte BLAKE2 hashes of the texts), plus ``NNNNNN.sha256`` (the checksum
of the vectors file). The keys file is written last, and all of them atomically, so a kill mid-encode
loses at most the shard being encoded; the next run resumes from the shards already on disk.

A shard is verified before its vectors are first used in a process: float32, two-dimensional, as
many rows as keys, the recorded checksum, finite values. A shard that fails is deleted (with a
warning) and its texts are encoded again, so a flipped byte or a NaN on disk is never returned.

Texts longer than :data:`embedkit.data.MAX_TEXT_CHARS` characters are cut to it before encoding
(and cached under the cut text); the model's token window is far shorter anyway.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit._io import atomic_save_npy, atomic_write_bytes, sha256_file
from embedkit.data.texts import MAX_TEXT_CHARS, check_texts, cut_texts
from embedkit.errors import EmbedkitError

__all__ = ["EmbeddingCache", "check_finite", "check_texts", "default_cache_dir", "encode_cached", "model_namespace",
           "text_key"]

logger = logging.getLogger(__name__)

KEY_BYTES = 16


def default_cache_dir() -> Path:
    return Path(os.environ.get("EMBEDKIT_CACHE") or Path.home() / ".cache" / "embedkit") / "embeddings"


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_BYTES).digest()


def model_namespace(model, prompt: str | None = None) -> str:
    """Cache namespace of a SentenceTransformer: weights fingerprint + output-relevant settings (max length,
    prompt, truncation, backend, and the compute precision when it is not fp32)."""
    from embedkit.models.identity import identity
    from embedkit.models.loading import model_fingerprint

    fp = model_fingerprint(model)
    backend = identity(model).backend
    # onnx / onnx-int8 embeddings differ from torch's: never share entries (the fingerprint differs too)
    precision = identity(model).extra.get("precision", "fp32")
    # fp32 adds nothing, so the namespaces of caches written before precisions existed stay valid
    settings = (f"L{getattr(model, 'max_seq_length', None)}|P{prompt or ''}|T{getattr(model, 'truncate_dim', None)}"
                + ("" if backend == "torch" else f"|B{backend}") + ("" if precision == "fp32" else f"|X{precision}"))
    return f"{fp}-{hashlib.blake2b(settings.encode(), digest_size=4).hexdigest()}"


class EmbeddingCache:
    """Shard store of embeddings keyed by text hash, one folder per model namespace.

    Args:
        root: cache folder; default ``$EMBEDKIT_CACHE/embeddings`` or ``~/.cache/embedkit/embeddings``.

    Example:
        >>> import tempfile
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put("ns", ["a"], np.ones((1, 3), np.float32))
        >>> cache.get("ns", ["a", "b"])[1]
        [1]
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self._index: dict[str, dict[bytes, tuple[int, int]]] = {}
        self._shards: dict[str, dict[int, np.ndarray]] = {}
        self._verified: dict[str, set[int]] = {}

    def _dir(self, namespace: str) -> Path:
        return self.root / namespace

    def _load(self, namespace: str) -> dict[bytes, tuple[int, int]]:
        if namespace in self._index:
            return self._index[namespace]
        index: dict[bytes, tuple[int, int]] = {}
        shards: dict[int, np.ndarray] = {}
        d = self._dir(namespace)
        if d.is_dir():
            for kp in sorted(d.glob("*.keys.npy")):
                sid = int(kp.name.split(".")[0])
                vp = d / f"{sid:06d}.vecs.npy"
                try:
                    keys = np.load(kp, allow_pickle=False)
                    vecs = np.load(vp, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError):
                    continue  # a damaged shard is ignored and its texts re-encoded
                if (keys.ndim != 2 or keys.shape[1] != KEY_BYTES or vecs.ndim != 2 or len(keys) != len(vecs)
                        or vecs.dtype != np.float32):
                    logger.warning("embedding cache: ignoring damaged shard %s", vp)
                    continue
                shards[sid] = vecs
                for row, k in enumerate(keys):
                    index[k.tobytes()] = (sid, row)
        self._index[namespace] = index
        self._shards[namespace] = shards
        self._verified[namespace] = set()
        return index

    def _shard_ok(self, namespace: str, sid: int) -> bool:
        d = self._dir(namespace)
        vp = d / f"{sid:06d}.vecs.npy"
        sp = d / f"{sid:06d}.sha256"
        try:
            recorded = sp.read_text().strip() if sp.exists() else None
            if recorded is not None and sha256_file(vp) != recorded:
                return False
            return bool(np.isfinite(self._shards[namespace][sid]).all())
        except (OSError, ValueError):
            return False

    def _verify(self, namespace: str, sids: set[int]) -> None:
        """Check the shards about to be read once per process; drop (and delete) the damaged ones."""
        verified = self._verified[namespace]
        index = self._index[namespace]
        for sid in sorted(sids - verified):
            if self._shard_ok(namespace, sid):
                verified.add(sid)
                continue
            d = self._dir(namespace)
            logger.warning("embedding cache: shard %06d in %s is damaged (checksum or NaN/inf); its texts are "
                           "encoded again", sid, d)
            for k in [k for k, (s, _) in index.items() if s == sid]:
                del index[k]
            del self._shards[namespace][sid]
            for suffix in ("keys.npy", "sha256", "vecs.npy"):
                try:
                    (d / f"{sid:06d}.{suffix}").unlink()
                except OSError:
                    pass

    def get(self, namespace: str, texts: Sequence[str]) -> tuple[list[np.ndarray | None], list[int]]:
        """Look texts up. Returns (vectors or None per text, positions of the misses)."""
        index = self._load(namespace)
        keys = [text_key(t) for t in texts]
        self._verify(namespace, {index[k][0] for k in keys if k in index})
        shards = self._shards[namespace]
        out: list[np.ndarray | None] = []
        missing = []
        for i, k in enumerate(keys):
            hit = index.get(k)
            if hit is None:
                out.append(None)
                missing.append(i)
            else:
                out.append(np.asarray(shards[hit[0]][hit[1]]))
        return out, missing

    def put(self, namespace: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Append one shard (atomic: vectors first, then their checksum, keys last)."""
        if len(texts) == 0:
            return
        index = self._load(namespace)
        shards = self._shards[namespace]
        d = self._dir(namespace)
        d.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name.split(".")[0]) for p in d.glob("*.vecs.npy")]
        sid = max(existing + list(shards) + [-1]) + 1
        keys = np.frombuffer(b"".join(text_key(t) for t in texts), dtype=np.uint8).reshape(-1, KEY_BYTES)
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        atomic_save_npy(d / f"{sid:06d}.vecs.npy", vecs)
        atomic_write_bytes(d / f"{sid:06d}.sha256", (sha256_file(d / f"{sid:06d}.vecs.npy") + "\n").encode())
        atomic_save_npy(d / f"{sid:06d}.keys.npy", keys)
        shards[sid] = vecs
        self._verified[namespace].add(sid)
        for row, k in enumerate(keys):
            index[k.tobytes()] = (sid, row)


#: Old private name of :func:`embedkit.data.check_texts`, kept while callers move to the public one.
_check_texts = check_texts


def check_finite(x: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """Raise a clear error if ``x`` holds NaN or inf (naming the first bad row)."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x).all(axis=tuple(range(1, x.ndim))))[0][0]) if x.ndim > 1 else 0
        raise EmbedkitError(f"{what} contain NaN or inf (first at row {bad})")
    return x


def encode_cached(
    model,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    show_progress: bool = True,
    cache: EmbeddingCache | bool | None = None,
    shard_size: int = 1024,
    prompt: str | None = None,
    desc: str = "encoding",
    max_chars: int | None = MAX_TEXT_CHARS,
) -> np.ndarray:
    """Encode texts with ``model``, reusing and filling the embedding cache.

    Args:
        model: a SentenceTransformer.
        texts: non-empty strings.
        cache: an :class:`EmbeddingCache`, ``None`` for the default one, ``False`` to bypass it
            (also when the environment sets ``EMBEDKIT_NO_CACHE=1``).
        shard_size: texts encoded (and persisted) per shard; a kill loses at most one shard.
        prompt: optional prompt passed to ``model.encode``.
        max_chars: texts longer than this are cut to it before tokenizing (default
            :data:`~embedkit.data.MAX_TEXT_CHARS`; ``None`` = never), with a logged warning giving
            the count. A caller that reports the count calls :func:`embedkit.data.cut_texts` first.

    Returns:
        float32 array ``(len(texts), dim)`` of the model's raw output (normalised only if the
        model itself normalises).

    Raises:
        EmbedkitError: empty/whitespace-only or non-string text; a batch or shard size below 1;
            NaN/inf in the model output.
    """
    from tqdm.auto import tqdm

    from embedkit.validation import check_positive_int

    check_texts(texts)
    batch_size = check_positive_int(batch_size, "batch_size")
    shard_size = check_positive_int(shard_size, "shard_size")
    texts, n_cut = cut_texts(texts, max_chars)
    if n_cut:
        logger.warning("cut %d text(s) longer than %d characters to their first %d before tokenizing",
                       n_cut, max_chars, max_chars)

    if os.environ.get("EMBEDKIT_NO_CACHE") == "1":
        cache = False
    if len(texts) == 0:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)

    def _encode(chunk):
        kw = {"prompt": prompt} if prompt else {}
        v = model.encode(list(chunk), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False, **kw)
        return check_finite(np.asarray(v, dtype=np.float32), f"model output for {len(chunk)} texts")

    if cache is False:
        outs = []
        with tqdm(total=len(texts), desc=desc, disable=not show_progress, unit="text") as bar:
            for s in range(0, len(texts), shard_size):
                outs.append(_encode(texts[s : s + shard_size]))
                bar.update(min(shard_size, len(texts) - s))
        return np.concatenate(outs)

    if cache is None or cache is True:
        cache = EmbeddingCache()
    ns = model_namespace(model, prompt)
    vecs, missing = cache.get(ns, texts)
    if missing:
        # unique missing texts, longest first is what ST does inside a call; keep input order here
        seen: dict[str, int] = {}
        todo = []
        for i in missing:
            if texts[i] not in seen:
                seen[texts[i]] = len(todo)
                todo.append(texts[i])
        done = np.empty((len(todo), 0), np.float32)
        parts = []
        with tqdm(total=len(todo), desc=desc, disable=not show_progress, unit="text") as bar:
            for s in range(0, len(todo), shard_size):
                chunk = todo[s : s + shard_size]
                v = _encode(chunk)
                cache.put(ns, chunk, v)
                parts.append(v)
                bar.update(len(chunk))
        done = np.concatenate(parts)
        for i in missing:
            vecs[i] = done[seen[texts[i]]]
    return np.stack(vecs).astype(np.float32, copy=False)
