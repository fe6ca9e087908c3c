"""The shards folder format and its reading side: what ``embedkit encode`` writes, read back checked.

A shards folder holds:

* ``manifest.json``: the model fingerprint, the input's checksum, the shard size, the count, the
  dimension and the sha256 of every complete shard;
* ``shard-NNNNN.npy``: float32 rows ``[N*shard_size, (N+1)*shard_size)``;
* ``ids.json``: the document ids, one per row, in row order;
* ``embedkit-output.json``: the marker saying the folder is an embedkit ``shards`` output.

:func:`load_shards` reads a finished folder into one array; :func:`open_shards` (:class:`ShardSet`)
reads it one shard at a time, as building an index from shards does. Both verify what the manifest
recorded (checksums, shapes, finite values, the ids' digest). The writing side (encoding, resuming,
partitions, Ray) is :mod:`embedkit.encoding`, which builds on this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from embedkit._io import sha256_file
from embedkit.errors import EmbedkitError

__all__ = ["FORMAT", "IDS_FILE", "KIND", "MANIFEST", "ShardSet", "load_shards", "open_shards", "read_manifest",
           "shard_name", "shard_ok", "texts_digest"]

logger = logging.getLogger(__name__)

FORMAT = "embedkit.shards/2"
KIND = "shards"
MANIFEST = "manifest.json"
IDS_FILE = "ids.json"
_MAX_MANIFEST_BYTES = 64 << 20


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 of the texts (or ids) in order, each followed by a NUL byte (the manifest's ``*_sha256``)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def shard_name(s: int) -> str:
    """The file name of shard ``s`` (``shard-00000.npy``, ...)."""
    return f"shard-{s:05d}.npy"


def read_manifest(folder: Path) -> dict:
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


def shard_ok(path: Path, recorded: str | None, rows: int, dim: int | None) -> str | None:
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


def load_shards(out: str | os.PathLike, *, return_ids: bool = False):
    """Concatenate the shards `embedkit encode` wrote, checking completeness and checksums.

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
    manifest = read_manifest(out)
    count, shard_size = manifest["count"], manifest["shard_size"]
    recorded = manifest.get("shard_sha256")
    n_shards = -(-count // shard_size)
    parts = []
    for s in range(n_shards):
        p = out / shard_name(s)
        if not p.exists():
            raise EmbedkitError(f"{out}: shard {p.name} is missing; rerun `embedkit encode` to finish")
        rows = min(count, (s + 1) * shard_size) - s * shard_size
        if recorded is not None:  # format 2: verify like a resume does
            why = shard_ok(p, recorded.get(p.name), rows, manifest.get("dim"))
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
    if "ids_sha256" in manifest and texts_digest(ids) != manifest["ids_sha256"]:
        raise EmbedkitError(f"{out}/{IDS_FILE}: does not match the manifest; rerun `embedkit encode`")
    return X, ids


class ShardSet:
    """A finished shards folder read one shard at a time (what building an index from shards needs).

    Nothing is loaded up front: the manifest, ``ids.json`` and every shard's ``.npy`` header are
    checked (all present, one dimension, the recorded row counts), and :meth:`iter_shards` verifies
    each shard's checksum as it reads it.

    Raises:
        EmbedkitError: (one line, naming the file) no readable manifest, a missing shard, a shard of
            another dimension or row count, ids that do not match the rows.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise EmbedkitError(f"{self.folder}: no embeddings folder there; run `embedkit encode --out` first")
        m = read_manifest(self.folder)
        self.manifest = m
        self.count, self.shard_size = m["count"], m["shard_size"]
        self.n_shards = -(-self.count // self.shard_size)
        self.recorded = m.get("shard_sha256") or {}
        self.model = m.get("model") if isinstance(m.get("model"), dict) else {}
        self.dim = None
        self.offsets: list[int] = []  # byte offset of the data in each shard file
        for s in range(self.n_shards):
            p = self.folder / shard_name(s)
            if not p.is_file():
                done = sum(shard_name(i) in self.recorded for i in range(self.n_shards))
                raise EmbedkitError(f"{p}: shard missing ({done} of {self.n_shards} done); rerun `embedkit encode` "
                                    "(every --shard I/N part) to finish")
            rows = self.rows_of(s)
            try:
                with open(p, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, fortran, dtype = read(f)
                    off = f.tell()
            except (OSError, ValueError) as e:
                raise EmbedkitError(f"{p}: not a readable .npy shard ({e}); rerun `embedkit encode`") from None
            if dtype != np.float32 or fortran or len(shape) != 2 or shape[0] != rows:
                raise EmbedkitError(f"{p}: holds {dtype} {shape}, expected float32 ({rows}, dim); rerun `embedkit encode`")
            if self.dim is None:
                self.dim = int(shape[1])
            elif shape[1] != self.dim:
                raise EmbedkitError(f"{p}: {shape[1]}-d vectors, but {shard_name(0)} holds {self.dim}-d ones; "
                                    "all shards must come from one model — re-encode into an empty folder")
            if p.stat().st_size != off + rows * shape[1] * 4:
                raise EmbedkitError(f"{p}: truncated ({p.stat().st_size} bytes); rerun `embedkit encode` to repair it")
            self.offsets.append(off)
        if m.get("dim") is not None and self.dim != m["dim"]:
            raise EmbedkitError(f"{self.folder / MANIFEST}: says {m['dim']}-d, the shards hold {self.dim}-d vectors")

    def rows_of(self, s: int) -> int:
        return min(self.count, (s + 1) * self.shard_size) - s * self.shard_size

    def ids(self) -> list[str]:
        """The document ids (``ids.json``), checked against the manifest."""
        path = self.folder / IDS_FILE
        try:
            ids = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EmbedkitError(f"{path}: missing (written by an older embedkit); rerun `embedkit encode`") from None
        except (OSError, ValueError) as e:
            raise EmbedkitError(f"{path}: unreadable ({e}); rerun `embedkit encode`") from None
        if not isinstance(ids, list) or len(ids) != self.count or not all(isinstance(x, str) for x in ids):
            raise EmbedkitError(f"{path}: expected {self.count} string ids; rerun `embedkit encode`")
        if "ids_sha256" in self.manifest and texts_digest(ids) != self.manifest["ids_sha256"]:
            raise EmbedkitError(f"{path}: does not match the manifest; rerun `embedkit encode`")
        return ids

    def check_ids(self, corpus_ids: Sequence[str], corpus: str = "the corpus") -> None:
        """Refuse a corpus whose ids are not the shards' ids, in the same order (one line, first difference)."""
        if len(corpus_ids) == self.count and self.manifest.get("ids_sha256") == texts_digest(corpus_ids):
            return  # equal to the recorded digest: no need to read ids.json
        ids = self.ids()
        if len(ids) != len(corpus_ids):
            raise EmbedkitError(f"{self.folder / IDS_FILE}: {len(ids)} embeddings but {corpus} has {len(corpus_ids)} "
                                "documents; encode this corpus (embedkit encode) or pass the corpus it was encoded from")
        for row, (a, b) in enumerate(zip(ids, corpus_ids)):
            if a != b:
                raise EmbedkitError(f"{self.folder / IDS_FILE}: row {row} is id {a!r} but {corpus} has {b!r} there; "
                                    "the embeddings were encoded from another corpus (or another order)")

    def read_shard(self, s: int) -> np.ndarray:
        """Shard ``s`` as float32 ``(rows, dim)``, its checksum and values verified."""
        p = self.folder / shard_name(s)
        data = p.read_bytes()
        want = self.recorded.get(p.name)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise EmbedkitError(f"{p}: checksum mismatch (damaged since it was encoded); rerun `embedkit encode` "
                                "to repair it")
        X = np.frombuffer(data, dtype=np.float32, offset=self.offsets[s]).reshape(self.rows_of(s), self.dim)
        if not np.isfinite(X).all():
            raise EmbedkitError(f"{p}: holds NaN or inf; rerun `embedkit encode` to repair it")
        return X

    def iter_shards(self, shards: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, vectors)`` for each shard, in row order (one shard in memory at a time)."""
        for s in (range(self.n_shards) if shards is None else shards):
            yield s * self.shard_size, self.read_shard(s)

    def read_rows(self, rows) -> np.ndarray:
        """The vectors of the given global ``rows`` (positioned reads: nothing is memory-mapped)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        rb = self.dim * 4
        order = np.argsort(rows, kind="stable")
        current, fd = -1, None
        try:
            for j in order:
                r = int(rows[j])
                s = r // self.shard_size
                if s != current:
                    if fd is not None:
                        os.close(fd)
                    fd, current = os.open(self.folder / shard_name(s), os.O_RDONLY), s
                buf = os.pread(fd, rb, self.offsets[s] + (r - s * self.shard_size) * rb)
                out[j] = np.frombuffer(buf, dtype=np.float32)
        finally:
            if fd is not None:
                os.close(fd)
        if not np.isfinite(out).all():
            raise EmbedkitError(f"{self.folder}: a shard holds NaN or inf; rerun `embedkit encode` to repair it")
        return out


def open_shards(folder: str | os.PathLike) -> ShardSet:
    """Open a finished shards folder for reading shard by shard (see :class:`ShardSet`)."""
    return ShardSet(folder)
