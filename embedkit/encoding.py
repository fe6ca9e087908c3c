"""Corpus -> float embedding shards on disk, resumable after a kill.

An output folder holds:

* ``manifest.json``: the model fingerprint, the input's checksum, the shard size, the count, the
  dimension and the sha256 of every complete shard;
* ``shard-NNNNN.npy``: float32 rows ``[N*shard_size, (N+1)*shard_size)``;
* ``ids.json``: the document ids, one per row, in row order;
* ``embedkit-output.json``: the marker saying the folder is an embedkit ``shards`` output.

Every file is written atomically and the manifest records a shard's checksum right after the shard
is written, so rerunning the same command after a kill reuses the complete shards and encodes the
rest. A shard is reused only if it passes the checks the embedding cache applies (checksum recorded
in the manifest, shape, dtype, finite values); any other shard is encoded again. Texts also go
through the embedding cache, so nothing is encoded twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from embedkit._io import atomic_save_npy, atomic_write_json, mark_output, output_kind, prepare_output, sha256_file
from embedkit.data.texts import MAX_TEXT_CHARS, check_texts, cut_texts
from embedkit.errors import EmbedkitError

__all__ = ["FORMAT", "encode_to_shards", "load_shards"]

logger = logging.getLogger(__name__)

FORMAT = "embedkit.shards/2"
KIND = "shards"
MANIFEST = "manifest.json"
IDS_FILE = "ids.json"
_IDENTITY = ("texts_sha256", "count", "shard_size")
_MAX_MANIFEST_BYTES = 64 << 20


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}.npy"


def _read_manifest(folder: Path) -> dict:
    """The shard manifest of ``folder``, or a one-line EmbedkitError saying why it cannot be used."""
    path = folder / MANIFEST
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ValueError("file too large")
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmbedkitError(f"{folder}: no shard manifest ({MANIFEST} is missing); run `embedkit encode` first") from None
    except (OSError, ValueError) as e:
        raise EmbedkitError(f"{path}: not a readable shard manifest ({e}); delete the folder or encode into "
                            "another one") from None
    ok = (isinstance(m, dict) and str(m.get("format", "")).startswith("embedkit.shards/")
          and all(isinstance(m.get(k), int) and not isinstance(m.get(k), bool) and m[k] >= 1
                  for k in ("count", "shard_size"))
          and isinstance(m.get("shard_sha256", {}), dict))
    if not ok:
        raise EmbedkitError(f"{path}: not an embedkit shard manifest (wrong format or fields); delete the folder or "
                            "encode into another one")
    return m


def _is_legacy_shards(folder: Path) -> bool:
    """A shards folder written before output markers existed."""
    if output_kind(folder) is not None:
        return False
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and str(m.get("format", "")).startswith("embedkit.shards/")


def _remove_outputs(folder: Path) -> None:
    """Delete what an earlier encode wrote (and nothing else)."""
    for p in folder.glob("shard-*.npy"):
        p.unlink()
    for name in (IDS_FILE, MANIFEST):
        (folder / name).unlink(missing_ok=True)


def _check_ids(ids, n: int) -> list[str]:
    if ids is None:
        return [str(i) for i in range(n)]
    if isinstance(ids, str):
        raise EmbedkitError("ids must be a list of strings, got a single string")
    out = []
    for i, x in enumerate(ids):
        if isinstance(x, bool) or not isinstance(x, (str, int)):
            raise EmbedkitError(f"id {i} is {type(x).__name__}, expected str")
        out.append(str(x))
    if len(out) != n:
        raise EmbedkitError(f"{len(out)} ids for {n} texts; give one id per text")
    if len(set(out)) != n:
        seen: set[str] = set()
        dup = next(x for x in out if x in seen or seen.add(x))
        raise EmbedkitError(f"id {dup!r} appears twice; ids must be unique")
    return out


def _shard_ok(path: Path, recorded: str | None, rows: int, dim: int | None) -> str | None:
    """None if the shard can be reused, else why not."""
    if recorded is None:
        return "no checksum recorded (the run was killed while writing it)"
    try:
        if sha256_file(path) != recorded:
            return "checksum mismatch"
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        return f"unreadable ({e})"
    if arr.dtype != np.float32 or arr.ndim != 2 or len(arr) != rows or (dim is not None and arr.shape[1] != dim):
        return f"shape {arr.shape} {arr.dtype}, expected ({rows}, {dim}) float32"
    if not np.isfinite(arr).all():
        return "holds NaN or inf"
    return None


def _prepare_folder(out: str | os.PathLike, manifest: dict, overwrite: bool,
                    inputs: Iterable[str | os.PathLike | None]) -> tuple[Path, dict]:
    """Check ``out``; return it and the shard checksums that may be reused."""
    p = Path(out)
    if p.is_dir() and not p.is_symlink() and _is_legacy_shards(p):
        mark_output(p, KIND)  # adopt a folder written by an earlier embedkit
    path = prepare_output(p, KIND, overwrite=True, inputs=inputs)
    if not (path / MANIFEST).exists():
        _remove_outputs(path)
        return path, {}
    try:
        old = _read_manifest(path)
    except EmbedkitError:
        if not overwrite:
            raise
        _remove_outputs(path)
        return path, {}
    old_fp = old.get("model", {}).get("fingerprint") if isinstance(old.get("model"), dict) else None
    if ({k: old.get(k) for k in _IDENTITY} != {k: manifest[k] for k in _IDENTITY}
            or old_fp != manifest["model"]["fingerprint"]):
        if not overwrite:
            raise EmbedkitError(f"{out} holds shards of another input or model; choose an empty --out folder "
                                "or pass --overwrite to replace them")
        _remove_outputs(path)
        return path, {}
    return path, dict(old.get("shard_sha256", {}))


def encode_to_shards(model, texts: Sequence[str], out: str | os.PathLike, *, ids: Sequence[str] | None = None,
                     shard_size: int = 4096, batch_size: int = 64, show_progress: bool = True, cache=None,
                     overwrite: bool = False, inputs: Iterable[str | os.PathLike | None] = (),
                     max_chars: int | None = MAX_TEXT_CHARS) -> dict:
    """Encode ``texts`` into ``out/shard-*.npy`` (+ ``ids.json``); resume from the complete shards.

    Args:
        model: a SentenceTransformer.
        texts: non-empty strings.
        out: the output folder: new, empty, or a shards folder of the same texts and model (resumed).
        ids: one id per text, written to ``out/ids.json``; default ``"0"``, ``"1"``, ... (row numbers).
        shard_size: texts per shard (a kill loses at most one shard).
        batch_size: texts per forward pass.
        show_progress: show a progress bar on stderr.
        cache: passed to :func:`~embedkit.cache.encode_cached`.
        overwrite: replace the shards of another input or model (or an unreadable manifest) in ``out``.
        inputs: input paths ``out`` must not be, contain or lie inside.
        max_chars: texts longer than this are cut before tokenizing (see
            :data:`~embedkit.data.MAX_TEXT_CHARS`); the manifest's ``texts_cut`` says how many were.

    Returns:
        The manifest, plus ``shards`` (number of shards), ``resumed_shards`` (reused from disk) and
        ``reencoded_shards`` (found on disk but damaged or unverifiable, so encoded again).

    Raises:
        EmbedkitError: bad texts, ids or sizes; ``out`` holds shards of another input or model, or
            an unreadable manifest (without ``overwrite``).
        OutputExistsError: ``out`` is a file, a folder holding something else, the current folder,
            or overlaps an input.
    """
    from tqdm.auto import tqdm

    from embedkit.cache import encode_cached
    from embedkit.models.loading import model_description, model_fingerprint
    from embedkit.validation import check_positive_int

    check_texts(texts, "document")
    if not texts:
        raise EmbedkitError("nothing to encode: the input has no texts")
    shard_size = check_positive_int(shard_size, "shard_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    ids = _check_ids(ids, len(texts))
    cut, n_cut = cut_texts(texts, max_chars)
    if n_cut:
        logger.warning("cut %d text(s) longer than %d characters to their first %d before tokenizing",
                       n_cut, max_chars, max_chars)
    manifest = {
        "format": FORMAT,
        "model": {"source": model_description(model), "fingerprint": model_fingerprint(model)},
        "texts_sha256": _texts_digest(texts),
        "ids_sha256": _texts_digest(ids),
        "count": len(texts),
        "shard_size": shard_size,
        "dim": model.get_embedding_dimension(),
        "max_chars": max_chars,
        "texts_cut": n_cut,
        "shard_sha256": {},
    }
    folder, recorded = _prepare_folder(out, manifest, overwrite, inputs)
    folder.mkdir(parents=True, exist_ok=True)
    mark_output(folder, KIND)
    manifest["shard_sha256"] = recorded
    atomic_write_json(folder / IDS_FILE, ids)
    atomic_write_json(folder / MANIFEST, manifest)
    n_shards = -(-len(texts) // shard_size)
    done = redone = 0
    with tqdm(total=len(texts), desc="encoding", unit="text", disable=not show_progress) as bar:
        for s in range(n_shards):
            lo, hi = s * shard_size, min(len(texts), (s + 1) * shard_size)
            name = _shard_name(s)
            path = folder / name
            if path.exists():
                why = _shard_ok(path, recorded.get(name), hi - lo, manifest["dim"])
                if why is None:
                    bar.update(hi - lo)
                    done += 1
                    continue
                logger.warning("%s: shard %s cannot be reused (%s); encoding it again", folder, name, why)
                redone += 1
            vecs = encode_cached(model, cut[lo:hi], batch_size=batch_size, show_progress=False, cache=cache,
                                 max_chars=None)
            atomic_save_npy(path, vecs)
            manifest["shard_sha256"][name] = sha256_file(path)
            atomic_write_json(folder / MANIFEST, manifest)
            bar.update(hi - lo)
    for extra in folder.glob("shard-*.npy"):  # shards beyond the count (none unless the folder was edited)
        if extra.name not in manifest["shard_sha256"]:
            extra.unlink()
    return {**manifest, "shards": n_shards, "resumed_shards": done, "reencoded_shards": redone}


def load_shards(out: str | os.PathLike, *, return_ids: bool = False):
    """Concatenate the shards written by :func:`encode_to_shards`, checking completeness and checksums.

    Args:
        out: the shards folder.
        return_ids: also return the document ids (``ids.json``).

    Returns:
        float32 array ``(count, dim)``, or ``(array, ids)`` with ``return_ids=True``.

    Raises:
        EmbedkitError: no readable manifest, a missing shard (the run did not finish), a shard whose
            checksum, shape or values do not match, or ids that do not match the rows.
    """
    out = Path(out)
    manifest = _read_manifest(out)
    count, shard_size = manifest["count"], manifest["shard_size"]
    recorded = manifest.get("shard_sha256")
    n_shards = -(-count // shard_size)
    parts = []
    for s in range(n_shards):
        p = out / _shard_name(s)
        if not p.exists():
            raise EmbedkitError(f"{out}: shard {p.name} is missing; rerun `embedkit encode` to finish")
        rows = min(count, (s + 1) * shard_size) - s * shard_size
        if recorded is not None:  # format 2: verify like a resume does
            why = _shard_ok(p, recorded.get(p.name), rows, manifest.get("dim"))
            if why is not None:
                raise EmbedkitError(f"{out}: shard {p.name} is damaged ({why}); rerun `embedkit encode` to repair it")
        try:
            parts.append(np.load(p, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise EmbedkitError(f"{out}: shard {p.name} is unreadable ({e}); rerun `embedkit encode`") from None
    X = np.concatenate(parts)
    if len(X) != count:
        raise EmbedkitError(f"{out}: shards hold {len(X)} rows, manifest says {count}")
    if not return_ids:
        return X
    try:
        ids = json.loads((out / IDS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmbedkitError(f"{out}: no {IDS_FILE} (written by an older embedkit); rerun `embedkit encode`") from None
    except (OSError, ValueError) as e:
        raise EmbedkitError(f"{out}/{IDS_FILE}: unreadable ({e}); rerun `embedkit encode`") from None
    if not isinstance(ids, list) or len(ids) != count or not all(isinstance(x, str) for x in ids):
        raise EmbedkitError(f"{out}/{IDS_FILE}: expected {count} string ids; rerun `embedkit encode`")
    if "ids_sha256" in manifest and _texts_digest(ids) != manifest["ids_sha256"]:
        raise EmbedkitError(f"{out}/{IDS_FILE}: does not match the manifest; rerun `embedkit encode`")
    return X, ids
