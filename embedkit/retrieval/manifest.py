"""The index folder's ``manifest.json``: writing it, reading it defensively, verifying the files.

The format defines a fixed set of files (:data:`REQUIRED_FILES`, plus :data:`RESCORE_FILE` when the
index keeps rescoring vectors). Verification walks that fixed set, never the names the manifest
happens to list, so an edited manifest cannot drop a file from verification or point outside the
folder. The checksums (sha256 of every file, plus a digest of the manifest itself) detect accidents —
a truncated copy, a half-synced folder, a hand-edited manifest, bit rot — not an attacker who can
write the folder: such a person can recompute every checksum.

Reading is bounded: ``manifest.json`` must be a regular file (not a symbolic link, pipe or device) of
at most :data:`MAX_MANIFEST_BYTES`, and its schema is checked before any field is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from embedkit._io import atomic_write_json, sha256_file
from embedkit.errors import IndexFormatError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "REQUIRED_FILES",
    "RESCORE_FILE",
    "MAX_MANIFEST_BYTES",
    "expected_files",
    "manifest_digest",
    "file_entries",
    "write_manifest",
    "read_manifest",
    "check_no_symlinks",
    "directory_size",
]

FORMAT = "embedkit.index/1"
MANIFEST = "manifest.json"
REQUIRED_FILES = ("quantizer.json", "quantizer.npz", "index.faiss", "docs.sqlite")
RESCORE_FILE = "rescore.f16.npy"
#: a manifest is a few kB (plus up to 1,000 skipped ids); anything far larger is not one
MAX_MANIFEST_BYTES = 4 << 20

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def expected_files(rescore: int | None) -> tuple[str, ...]:
    """The files an index folder must hold: the fixed set, plus the rescoring vectors if kept."""
    return REQUIRED_FILES + ((RESCORE_FILE,) if rescore else ())


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's content without its own ``manifest_sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def file_entries(folder: str | os.PathLike, names) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256": ..., "bytes": ...}}`` for the given files of ``folder``."""
    folder = Path(folder)
    return {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in names}


def write_manifest(folder: str | os.PathLike, fields: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` into ``folder`` with ``fields``, the format and its own digest; return it."""
    manifest = {"format": FORMAT, **fields}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    atomic_write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def check_no_symlinks(folder: Path) -> None:
    """Refuse an index folder that holds a symbolic link (its files must be its own)."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise IndexFormatError(f"{folder}: cannot list the index folder ({e.strerror})") from e
    for entry in entries:
        if entry.is_symlink():
            raise IndexFormatError(
                f"{folder}: {entry.name} is a symbolic link; an index folder must hold its own files — copy the "
                "index with its files (e.g. cp -rL) or rebuild it")


def _read_bounded(mpath: Path, folder: Path) -> bytes:
    try:
        st = os.lstat(mpath)
    except FileNotFoundError:
        raise IndexFormatError(f"{folder}: not an embedkit index (no {MANIFEST})") from None
    except OSError as e:
        raise IndexFormatError(f"{mpath}: cannot read the manifest ({e.strerror})") from e
    if stat.S_ISLNK(st.st_mode):
        raise IndexFormatError(f"{mpath}: the manifest is a symbolic link; an index folder must hold its own files")
    if not stat.S_ISREG(st.st_mode):
        raise IndexFormatError(f"{mpath}: the manifest is not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise IndexFormatError(f"{mpath}: the manifest is {st.st_size} bytes, over the {MAX_MANIFEST_BYTES} "
                               "a manifest can have; this is not an embedkit index")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(mpath, flags)
    except OSError as e:
        raise IndexFormatError(f"{mpath}: cannot read the manifest ({e.strerror})") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped after the lstat
            raise IndexFormatError(f"{mpath}: the manifest is not a regular file")
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise IndexFormatError(f"{mpath}: the manifest is over {MAX_MANIFEST_BYTES} bytes; this is not an embedkit index")
    return data


def _is_int(v, minimum: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _check_schema(m: dict, mpath: Path) -> None:
    def bad(key: str, want: str):
        got = "missing" if key not in m else f"{type(m[key]).__name__} {m[key]!r}"[:80]
        raise IndexFormatError(f"{mpath}: field {key!r} must be {want} ({got}); the manifest is damaged, rebuild the index")

    model = m.get("model")
    if not isinstance(model, dict):
        bad("model", "an object with 'source' and 'fingerprint'")
    for key in ("source", "fingerprint"):
        if key not in model or not (model[key] is None or isinstance(model[key], str)):
            raise IndexFormatError(f"{mpath}: field 'model.{key}' must be a string or null; the manifest is damaged, "
                                   "rebuild the index")
    if not isinstance(m.get("spec"), str) or not m["spec"]:
        bad("spec", "a compression spec string")
    if not isinstance(m.get("backend"), str):
        bad("backend", "a backend name")
    if not _is_int(m.get("dim"), 1):
        bad("dim", "a whole number >= 1")
    if not _is_int(m.get("count"), 0):
        bad("count", "a whole number >= 0")
    if not (m.get("rescore") is None or _is_int(m.get("rescore"), 1)):
        bad("rescore", "null or a whole number >= 1")
    if not (m.get("nlist") is None or _is_int(m.get("nlist"), 1)):
        bad("nlist", "null or a whole number >= 1")
    if not _is_int(m.get("hnsw_m", 32), 2):
        bad("hnsw_m", "a whole number >= 2")
    skipped = m.get("skipped_empty", {"count": 0, "ids": []})
    if not (isinstance(skipped, dict) and _is_int(skipped.get("count"), 0) and isinstance(skipped.get("ids"), list)
            and all(isinstance(i, str) for i in skipped["ids"])):
        bad("skipped_empty", "an object with 'count' and 'ids'")
    files = m.get("files")
    if not isinstance(files, dict):
        bad("files", "an object of file checksums")
    for name, info in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or os.sep in name or name in ("", ".", ".."):
            raise IndexFormatError(f"{mpath}: file name {name!r} in 'files' is not a plain file name; the manifest is "
                                   "damaged or forged, rebuild the index")
        if not (isinstance(info, dict) and isinstance(info.get("sha256"), str) and _SHA256.match(info["sha256"])
                and _is_int(info.get("bytes"), 0)):
            raise IndexFormatError(f"{mpath}: entry {name!r} in 'files' needs 'sha256' (64 hex digits) and 'bytes'; "
                                   "the manifest is damaged, rebuild the index")


def read_manifest(path: str | os.PathLike, *, verify: bool = True) -> dict:
    """Read and check an index folder's ``manifest.json``.

    Checks, in order: the folder exists; the manifest is a regular file of bounded size holding a JSON
    object of this format; its own digest; its schema; no symbolic link in the folder; the manifest
    lists exactly the files the format defines; each exists as a regular file of the recorded size and
    (with ``verify``) the recorded sha256.

    Raises:
        IndexFormatError: a missing, foreign, edited, truncated or corrupt index (one line, naming the file).
    """
    path = Path(path)
    if not path.is_dir():
        raise IndexFormatError(f"{path}: no index folder there")
    mpath = path / MANIFEST
    data = _read_bounded(mpath, path)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise IndexFormatError(f"{mpath}: manifest is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("embedkit.index/"):
        raise IndexFormatError(f"{path}: not an embedkit index (format {fmt!r})")
    if fmt != FORMAT:
        raise IndexFormatError(f"{path}: index format {fmt} is not supported by this embedkit ({FORMAT}); rebuild it")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise IndexFormatError(f"{mpath}: manifest was modified after the index was saved (checksum mismatch); "
                               "rebuild the index")
    _check_schema(manifest, mpath)
    check_no_symlinks(path)
    expected = expected_files(manifest.get("rescore"))
    listed = set(manifest["files"])
    for name in expected:
        if name not in listed:
            raise IndexFormatError(f"{mpath}: the manifest does not list {name}; the manifest is damaged, rebuild the index")
    extra = sorted(listed - set(expected))
    if extra:
        raise IndexFormatError(f"{mpath}: the manifest lists {extra[0]!r}, which is not part of an embedkit index; "
                               "the manifest is damaged, rebuild the index")
    for name in expected:
        fp = path / name
        try:
            st = os.lstat(fp)
        except FileNotFoundError:
            raise IndexFormatError(f"{path}: {name} is missing; the index is incomplete, rebuild it") from None
        if not stat.S_ISREG(st.st_mode):
            raise IndexFormatError(f"{path}: {name} is not a regular file; rebuild the index")
        info = manifest["files"][name]
        if st.st_size != info["bytes"] or (verify and sha256_file(fp) != info["sha256"]):
            raise IndexFormatError(f"{path}: {name} is corrupt or truncated (checksum mismatch); rebuild the index")
    return manifest


def directory_size(path: str | os.PathLike, *, exclude: tuple[str, ...] = ()) -> int:
    """Total bytes of the files in ``path`` (not following links), minus the names in ``exclude``."""
    return sum(p.stat().st_size for p in Path(path).iterdir()
               if p.is_file() and not p.is_symlink() and p.name not in exclude)
