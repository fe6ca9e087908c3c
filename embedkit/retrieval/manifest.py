"""The index folder's ``manifest.json``: writing it, reading it defensively, verifying the files.

The format defines a fixed set of files (:data:`REQUIRED_FILES`, plus :data:`RESCORE_FILE` when the
index keeps rescoring vectors). Verification walks that fixed set, never the names the manifest
happens to list, so an edited manifest cannot drop a file from verification or point outside the
folder. The checksums (sha256 of every file, plus a digest of the manifest itself) detect accidents —
a truncated copy, a half-synced folder, a hand-edited manifest, bit rot — not an attacker who can
write the folder: such a person can recompute every checksum.

Two layouts share this manifest (see :mod:`embedkit.retrieval.ondisk`): ``embedkit.index/1`` (one
set of files, loaded into memory) and ``embedkit.index/2`` (the disk-backed layout: immutable
segments ``seg-NNNNN.*`` plus a tombstone file ``removed-NNNNN.npy``; the expected names are derived
from the manifest's ``segments`` and checked against a fixed pattern). In the disk layout, files over
:data:`LARGE_FILE_BYTES` are checked at load by size and by the sha256 of their first and last MiB
(``sample_sha256``), so loading stays fast however large the index; ``verify="full"`` hashes all.

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
    "FORMAT_DISK",
    "EMPTY_INDEX",
    "LARGE_FILE_BYTES",
    "disk_expected_files",
    "sample_sha256",
]

FORMAT = "embedkit.index/1"
MANIFEST = "manifest.json"
REQUIRED_FILES = ("quantizer.json", "quantizer.npz", "index.faiss", "docs.sqlite")
RESCORE_FILE = "rescore.f16.npy"
#: a manifest is a few kB (plus up to 1,000 skipped ids); anything far larger is not one
MAX_MANIFEST_BYTES = 4 << 20

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

FORMAT_DISK = "embedkit.index/2"
#: the trained, empty IVF index of a disk-backed index (new segments start from it)
EMPTY_INDEX = "empty.faiss"
#: files larger than this are verified at load by size + sample_sha256 (``verify="full"``: everything)
LARGE_FILE_BYTES = 64 << 20
_SAMPLE = 1 << 20
_SEGMENT = re.compile(r"^seg-\d{5}$")
_REMOVED = re.compile(r"^removed-\d{5}\.npy$")


def sample_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's size, first MiB and last MiB: a fast check for truncation and header damage."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_SAMPLE))
        if size > _SAMPLE:
            f.seek(max(_SAMPLE, size - _SAMPLE))
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


def disk_expected_files(manifest: dict) -> tuple[str, ...]:
    """The files a disk-backed index folder must hold, derived from its (schema-checked) manifest."""
    names = ["quantizer.json", "quantizer.npz"]
    if manifest.get("backend") == "ivf":
        names.append(EMPTY_INDEX)
    for seg in manifest["segments"]:
        names += [f"{seg['name']}.faiss", f"{seg['name']}.sqlite"]
        if seg.get("ivfdata"):
            names.append(f"{seg['name']}.ivfdata")
        if manifest.get("rescore"):
            names.append(f"{seg['name']}.f16.npy")
    if manifest["removed"]["file"] is not None:
        names.append(manifest["removed"]["file"])
    return tuple(names)


def expected_files(rescore: int | None) -> tuple[str, ...]:
    """The files an index folder must hold: the fixed set, plus the rescoring vectors if kept."""
    return REQUIRED_FILES + ((RESCORE_FILE,) if rescore else ())


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's content without its own ``manifest_sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def file_entries(folder: str | os.PathLike, names, *, known: dict | None = None) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256": ..., "bytes": ..., "sample_sha256": ...}}`` for the given files of ``folder``.

    ``known`` holds entries already computed (for files written while hashing, or unchanged since the
    last save); they are reused as they are.
    """
    folder = Path(folder)
    out = {}
    for n in names:
        if known and n in known:
            out[n] = known[n]
            continue
        size = (folder / n).stat().st_size
        out[n] = {"sha256": sha256_file(folder / n), "bytes": size}
        if size > LARGE_FILE_BYTES:
            out[n]["sample_sha256"] = sample_sha256(folder / n)
    return out


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
    if not isinstance(m.get("keyword", False), bool):
        bad("keyword", "true or false")
    for key in ("nprobe", "ef_search"):
        if not (m.get(key) is None or _is_int(m.get(key), 1)):
            bad(key, "null or a whole number >= 1")
    if m.get("format") == FORMAT_DISK:
        _check_disk_schema(m, bad)
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


def _check_disk_schema(m: dict, bad) -> None:
    segs = m.get("segments")
    if not isinstance(segs, list) or not segs:
        bad("segments", "a non-empty list of segments")
    end = 0
    for seg in segs:
        if not (isinstance(seg, dict) and isinstance(seg.get("name"), str) and _SEGMENT.match(seg["name"])
                and _is_int(seg.get("start"), 0) and _is_int(seg.get("count"), 0)
                and isinstance(seg.get("ivfdata", False), bool)):
            bad("segments", "segments {name: seg-NNNNN, start, count}")
        if seg["start"] != end:
            bad("segments", f"contiguous segments (one starts at {seg['start']}, expected {end})")
        end = seg["start"] + seg["count"]
    if len({seg["name"] for seg in segs}) != len(segs):
        bad("segments", "segments with distinct names")
    removed = m.get("removed")
    if not (isinstance(removed, dict) and _is_int(removed.get("count"), 0)
            and (removed.get("file") is None or (isinstance(removed["file"], str) and _REMOVED.match(removed["file"])))):
        bad("removed", "an object {file: removed-NNNNN.npy or null, count}")
    if not _is_int(m.get("generation"), 0):
        bad("generation", "a whole number >= 0")
    if m["count"] != end - removed["count"]:
        bad("count", f"the segments' {end} rows less {removed['count']} removed")


def read_manifest(path: str | os.PathLike, *, verify: bool | str = True) -> dict:
    """Read and check an index folder's ``manifest.json``.

    Checks, in order: the folder exists; the manifest is a regular file of bounded size holding a JSON
    object of this format; its own digest; its schema; no symbolic link in the folder; the manifest
    lists exactly the files the format defines; each exists as a regular file of the recorded size and
    (with ``verify``) the recorded sha256 (disk layout: files over :data:`LARGE_FILE_BYTES` by their
    ``sample_sha256`` unless ``verify="full"``).

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
    if fmt not in (FORMAT, FORMAT_DISK):
        raise IndexFormatError(f"{path}: index format {fmt} is not supported by this embedkit ({FORMAT}); rebuild it")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise IndexFormatError(f"{mpath}: manifest was modified after the index was saved (checksum mismatch); "
                               "rebuild the index")
    _check_schema(manifest, mpath)
    check_no_symlinks(path)
    disk = fmt == FORMAT_DISK
    expected = disk_expected_files(manifest) if disk else expected_files(manifest.get("rescore"))
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
        if st.st_size != info["bytes"]:
            raise IndexFormatError(f"{path}: {name} is corrupt or truncated ({st.st_size} bytes, the manifest says "
                                   f"{info['bytes']}); rebuild the index")
        if not verify:
            continue
        if disk and verify != "full" and st.st_size > LARGE_FILE_BYTES and isinstance(info.get("sample_sha256"), str):
            ok = sample_sha256(fp) == info["sample_sha256"]
        else:
            ok = sha256_file(fp) == info["sha256"]
        if not ok:
            raise IndexFormatError(f"{path}: {name} is corrupt or truncated (checksum mismatch); rebuild the index")
    return manifest


def directory_size(path: str | os.PathLike, *, exclude: tuple[str, ...] = ()) -> int:
    """Total bytes of the files in ``path`` (not following links), minus the names in ``exclude``."""
    return sum(p.stat().st_size for p in Path(path).iterdir()
               if p.is_file() and not p.is_symlink() and p.name not in exclude)
