"""Corpus -> float embedding shards on disk, resumable after a kill.

``OUT/manifest.json`` records the model fingerprint, the input's checksum, the shard size and the
count; ``OUT/shard-NNNNN.npy`` holds rows ``[N*shard_size, (N+1)*shard_size)``. Every shard is
written atomically, so rerunning the same command after a kill skips the complete shards and
encodes the rest. Texts also go through the embedding cache, so nothing is encoded twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from embedkit._io import atomic_save_npy, atomic_write_json
from embedkit.errors import EmbedkitError

FORMAT = "embedkit.shards/1"


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def encode_to_shards(model, texts: Sequence[str], out: str | Path, *, shard_size: int = 4096, batch_size: int = 64,
                     show_progress: bool = True, cache=None) -> dict:
    """Encode ``texts`` into ``out/shard-*.npy``; resume from complete shards. Returns the manifest."""
    from tqdm.auto import tqdm

    from embedkit.cache import _check_texts, encode_cached
    from embedkit.models.loading import model_description, model_fingerprint

    _check_texts(texts, "document")
    if not texts:
        raise EmbedkitError("nothing to encode: the input has no texts")
    if shard_size < 1:
        raise EmbedkitError(f"shard size must be >= 1, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "model": {"source": model_description(model), "fingerprint": model_fingerprint(model)},
        "texts_sha256": _texts_digest(texts),
        "count": len(texts),
        "shard_size": shard_size,
        "dim": model.get_embedding_dimension(),
    }
    mpath = out / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        same = {k: old.get(k) for k in ("model", "texts_sha256", "count", "shard_size")} == {
            k: manifest[k] for k in ("model", "texts_sha256", "count", "shard_size")}
        if not same:
            raise EmbedkitError(f"{out} holds shards of another input or model; choose an empty --out folder")
    atomic_write_json(mpath, manifest)
    n_shards = -(-len(texts) // shard_size)
    done = 0
    with tqdm(total=len(texts), desc="encoding", unit="text", disable=not show_progress) as bar:
        for s in range(n_shards):
            lo, hi = s * shard_size, min(len(texts), (s + 1) * shard_size)
            path = out / f"shard-{s:05d}.npy"
            if path.exists():
                try:
                    arr = np.load(path, mmap_mode="r", allow_pickle=False)
                    if arr.shape == (hi - lo, manifest["dim"]):
                        bar.update(hi - lo)
                        done += 1
                        continue
                except ValueError:
                    pass  # damaged shard: encode again
            vecs = encode_cached(model, list(texts[lo:hi]), batch_size=batch_size, show_progress=False, cache=cache)
            atomic_save_npy(path, vecs)
            bar.update(hi - lo)
    manifest["shards"] = n_shards
    manifest["resumed_shards"] = done
    return manifest


def load_shards(out: str | Path) -> np.ndarray:
    """Concatenate the shards written by :func:`encode_to_shards` (checks completeness)."""
    out = Path(out)
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise EmbedkitError(f"{out}: no readable shard manifest ({e})") from e
    n_shards = -(-manifest["count"] // manifest["shard_size"])
    parts = []
    for s in range(n_shards):
        p = out / f"shard-{s:05d}.npy"
        if not p.exists():
            raise EmbedkitError(f"{out}: shard {p.name} is missing; rerun `embedkit encode` to finish")
        parts.append(np.load(p, allow_pickle=False))
    X = np.concatenate(parts)
    if len(X) != manifest["count"]:
        raise EmbedkitError(f"{out}: shards hold {len(X)} rows, manifest says {manifest['count']}")
    return X
