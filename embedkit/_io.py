"""Atomic file and folder writes, checksums, and the data-folder lookup shared by all modules."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator:
    """Yield a binary file in ``path``'s folder; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    with _atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as .npy atomically (never pickled)."""
    with _atomic_file(path) as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save arrays as one .npz atomically (never pickled)."""
    with _atomic_file(path) as f:
        np.savez(f, **arrays)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load an .npz written by :func:`atomic_save_npz`; refuses pickled content."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode for new files: ``0o666`` less the process umask (what ``open()`` would give)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Mode for new folders: ``0o777`` less the process umask (what ``mkdir`` would give)."""
    return 0o777 & ~_umask()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _siblings(target: Path, kind: str) -> list[Path]:
    """Leftovers of interrupted swaps of ``target``: ``.NAME.PID.*.tmp`` or ``.NAME.old-PID``."""
    out = []
    prefix = f".{target.name}."
    for p in target.parent.glob(f".{target.name}.*"):
        rest = p.name[len(prefix):]
        if kind == "tmp" and rest.endswith(".tmp"):
            out.append(p)
        elif kind == "old" and rest.startswith("old-"):
            out.append(p)
    return out


def _pid_of(p: Path, target: Path) -> int | None:
    rest = p.name[len(target.name) + 2:]
    head = rest[4:] if rest.startswith("old-") else rest.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def recover_directory(target: str | os.PathLike) -> bool:
    """Finish or undo a folder swap that a killed process left half-done.

    :func:`atomic_directory` renames the previous folder to ``.NAME.old-PID`` before renaming the new
    one into place. A kill between the two renames leaves no folder at ``target``: this puts the
    previous (complete) folder back. A leftover ``.old`` folder beside a present ``target`` is the
    replaced version and is removed. Returns True when a previous folder was restored.
    """
    target = Path(target)
    restored = False
    olds = [p for p in _siblings(target, "old") if not _pid_alive(_pid_of(p, target) or -1)]
    if olds and not target.exists():
        newest = max(olds, key=lambda p: p.stat().st_mtime)
        os.replace(newest, target)
        olds.remove(newest)
        restored = True
        logger.warning("restored %s from an interrupted save (%s)", target, newest.name)
    if target.exists():
        for p in olds:
            shutil.rmtree(p, ignore_errors=True)
    return restored


def _clean_stale_tmp(target: Path) -> None:
    for p in _siblings(target, "tmp"):
        pid = _pid_of(p, target)
        if pid is None or not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` atomically.

    If the body raises, the temporary folder is removed and ``target`` is left exactly as it was.
    Replacing an existing folder renames it aside (``.NAME.old-PID``) first, renames the new one into
    place, then deletes the old one, so at every instant a complete folder exists under one of the two
    names; :func:`recover_directory` (run here first, and by loaders) restores the previous folder after
    a kill between the two renames. Temporary folders of killed saves (``.NAME.PID.*.tmp``) are removed
    by the next save. Files and folders get the usual umask-derived modes, not ``mkstemp``'s 0600/0700.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    _clean_stale_tmp(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp"))
    try:
        yield tmp
        _refresh_marker(tmp)  # the folder's content is final now: record exactly what it holds
        fmode, dmode = file_mode(), dir_mode()
        for p in tmp.rglob("*"):
            if p.is_file() and not p.is_symlink():
                os.chmod(p, fmode)
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
            elif p.is_dir():
                os.chmod(p, dmode)
        os.chmod(tmp, dmode)
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder by path (a folder's fsync makes renames inside it durable); errors ignored."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- outputs: replace only what embedkit itself wrote -------------------------------------------

OUTPUT_MARKER = "embedkit-output.json"
#: a marker lists every file of its folder; far larger than any real output's list is not one
_MAX_MARKER_BYTES = 16 << 20
#: temporary names of embedkit's atomic writes (``.NAME.RANDOM.tmp``) and swaps (``.NAME.old-PID``)
_TEMP_NAME = re.compile(r"^\..+(\.tmp|\.old-\d+)$")
#: names a kind's writer adds in place after the marker was written: a disk-backed index's
#: incremental saves (segments, tombstones, manifest), encode's shards (these describe its whole
#: folder), a model's ONNX exports (``.embedkit-onnx``, written beside the weights on first use)
_LATER_NAMES: dict[str, tuple[str, ...]] = {
    "index": ("manifest.json", "seg-[0-9][0-9][0-9][0-9][0-9].*", "removed-[0-9][0-9][0-9][0-9][0-9].npy"),
    "shards": ("manifest.json", "ids.json", "shard-*.npy", ".embedkit-encode.lock"),
    "model": (".embedkit-onnx", ".embedkit-onnx/*"),
}
#: kinds whose folder :data:`_LATER_NAMES` describes completely (no file list needed)
_NAMES_COMPLETE = ("shards",)
#: at most this many foreign entries are named in a refusal
_NAMED = 3


def _entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` as a relative POSIX path, sorted.

    Left out: the folder's own marker and embedkit's temporary names (:data:`_TEMP_NAME`, not descended
    into). Symbolic links are listed, never followed.
    """
    out: list[str] = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        dirs[:] = [d for d in dirs if not _TEMP_NAME.match(d)]
        out += [(rel / d).as_posix() for d in dirs]
        out += [(rel / f).as_posix() for f in files
                if not _TEMP_NAME.match(f) and not (f == OUTPUT_MARKER and rel == Path("."))]
    return sorted(out)


def _read_marker(folder: Path) -> dict | None:
    """The parsed marker of ``folder`` (a JSON object with a string ``kind``), or None."""
    marker = folder / OUTPUT_MARKER
    try:
        if not marker.is_file() or marker.is_symlink() or marker.stat().st_size > _MAX_MARKER_BYTES:
            return None
        rec = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("kind"), str) else None


def mark_output(folder: str | os.PathLike, kind: str, *, patterns: Iterable[str] = ()) -> None:
    """Mark ``folder`` as an embedkit output of ``kind``, listing every file and folder it holds now.

    The list is what a later ``overwrite`` may replace (:func:`prepare_output`): call this when the
    folder's content is final. Inside :func:`atomic_directory` the order does not matter, since the list
    is taken again just before the folder is committed. A folder that is written into over time (an
    interrupted run must stay replaceable) names what it will add with ``patterns``
    (:func:`fnmatch.fnmatchcase` patterns on relative POSIX paths; ``*`` also matches ``/``).
    """
    from embedkit import __version__

    folder = Path(folder)
    rec: dict[str, Any] = {"kind": kind, "embedkit": __version__, "files": _entries(folder)}
    pats = [str(x) for x in patterns]
    if pats:
        rec["patterns"] = pats
    atomic_write_json(folder / OUTPUT_MARKER, rec)


def _refresh_marker(folder: Path) -> None:
    """Re-list the files of ``folder`` in its marker, if it has one (see :func:`atomic_directory`)."""
    rec = _read_marker(folder)
    if rec is not None:
        rec["files"] = _entries(folder)
        atomic_write_json(folder / OUTPUT_MARKER, rec)


def output_kind(path: str | os.PathLike) -> str | None:
    """The kind of embedkit output at ``path`` (``"index"``, ``"model"``, ...), or None if it is not one."""
    path = Path(path)
    if (path / OUTPUT_MARKER).exists():
        rec = _read_marker(path)
        return rec["kind"] if rec is not None else None
    # outputs written before the marker existed
    fmt = (_index_manifest(path) or {}).get("format")
    return "index" if isinstance(fmt, str) and fmt.startswith("embedkit.index/") else None


def _index_manifest(path: Path) -> dict | None:
    manifest = path / "manifest.json"
    try:
        if manifest.is_file() and manifest.stat().st_size < (4 << 20):
            m = json.loads(manifest.read_text(encoding="utf-8"))
            return m if isinstance(m, dict) else None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return None


def _index_files(path: Path) -> set[str] | None:
    """The files an index folder's manifest lists (None when it lists none)."""
    m = _index_manifest(path)
    files = m.get("files") if m is not None else None
    if not isinstance(files, dict):
        return None
    out = {str(k) for k in files}
    removed = m.get("removed")
    if isinstance(removed, dict) and isinstance(removed.get("file"), str):
        out.add(removed["file"])
    return out


def foreign_entries(path: str | os.PathLike, kind: str) -> list[str] | None:
    """What an embedkit output folder of ``kind`` holds that embedkit did not write (relative paths).

    Written by embedkit: what the marker lists (:func:`mark_output`), what matches its ``patterns`` or
    the kind's later names (:data:`_LATER_NAMES`), and, for an index, the files its manifest lists.
    Returns None when the folder does not say what embedkit wrote (an output of an older embedkit
    without a file list, other than an index whose manifest lists its files).
    """
    path = Path(path)
    rec = _read_marker(path) or {}
    listed = rec.get("files")
    ours: set[str] | None = {str(x) for x in listed} if isinstance(listed, list) else None
    if kind == "index":
        names = _index_files(path)
        if names is not None:
            ours = (ours or set()) | names
    if ours is None:
        if kind not in _NAMES_COMPLETE:
            return None
        ours = set()
    pats = list(_LATER_NAMES.get(kind, ()))
    if isinstance(rec.get("patterns"), list):
        pats += [str(x) for x in rec["patterns"]]
    return [e for e in _entries(path) if e not in ours and not any(fnmatch.fnmatchcase(e, x) for x in pats)]


def _foreign_message(option: str, raw: str, foreign: list[str]) -> str:
    named = ", ".join(foreign[:_NAMED]) + (f" and {len(foreign) - _NAMED} more" if len(foreign) > _NAMED else "")
    return (f"{option} {raw!r} holds {'a file' if len(foreign) == 1 else f'{len(foreign)} entries'} embedkit did "
            f"not write ({named}); embedkit will not replace it — move them out or name a new folder")


def _same_or_inside(a: Path, b: Path) -> bool:
    """True if ``a`` is ``b`` or lies inside ``b``."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def _check_inputs(p: Path, raw: str, inputs: Iterable[str | os.PathLike | None], option: str, what: str) -> None:
    """Refuse an output that is, contains or lies inside one of ``inputs`` (files or folders)."""
    from embedkit.errors import OutputExistsError

    for inp in inputs:
        if inp is None:
            continue
        q = Path(inp).expanduser().resolve()
        if _same_or_inside(p, q) or _same_or_inside(q, p):
            raise OutputExistsError(f"{option} {raw!r} would overwrite the input {str(inp)!r}; name another {what}")


def prepare_output(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out") -> Path:
    """Check that ``path`` may receive an embedkit output of ``kind``; return it resolved.

    Allowed: a path that does not exist, an empty folder, or (with ``overwrite``) an existing embedkit
    output of the same kind that holds only what embedkit wrote there (:func:`foreign_entries`).
    Refused with :class:`~embedkit.errors.OutputExistsError` (one line): a file, a folder holding
    anything else (the foreign entries are named), the current folder or one of its parents, and a path
    that is, contains or lies inside one of ``inputs`` — nothing the user already had is ever replaced.
    """
    from embedkit.errors import OutputExistsError

    raw = str(path)
    if not raw.strip():
        raise OutputExistsError(f"{option} is empty; name a new folder")
    p = Path(path).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if _same_or_inside(cwd, p):
        raise OutputExistsError(
            f"{option} {raw!r} is the current folder or one of its parents; name a new folder, e.g. {option} my_{kind}")
    _check_inputs(p, raw, inputs, option, "folder")
    if not p.exists() and not p.is_symlink():
        return p
    if not p.is_dir() or p.is_symlink():
        raise OutputExistsError(f"{option} {raw!r} exists and is not a folder; embedkit will not replace it")
    if not any(p.iterdir()):
        return p
    found = output_kind(p)
    if found == kind:
        foreign = foreign_entries(p, kind)
        if foreign is None:
            raise OutputExistsError(
                f"{option} {raw!r} is an embedkit {kind} from an older embedkit that did not record which files it "
                "wrote; embedkit will not replace it — delete it yourself or name a new folder")
        if foreign:
            raise OutputExistsError(_foreign_message(option, raw, foreign))
        if overwrite:
            return p
        raise OutputExistsError(f"{option} {raw!r} already holds an embedkit {kind}; pass --overwrite to replace it")
    what = f"an embedkit {found}, not a {kind}" if found else f"not empty and not an embedkit {kind}"
    raise OutputExistsError(f"{option} {raw!r} is {what}; embedkit will not replace it — name a new folder")


# --- single-file outputs: a hidden record beside the file -----------------------------------------

def _file_record(path: Path) -> Path:
    return path.with_name(f".{path.name}.{OUTPUT_MARKER}")


def mark_output_file(path: str | os.PathLike, kind: str) -> None:
    """Record that embedkit wrote the file ``path`` as a ``kind`` output (call after writing it).

    The record is a hidden file beside it, ``.NAME.embedkit-output.json``, holding the kind, the size
    and the sha256 of the content: a later ``--overwrite`` replaces the file only while it is exactly
    what embedkit wrote (:func:`output_file_kind`).
    """
    from embedkit import __version__

    path = Path(path)
    atomic_write_json(_file_record(path), {"kind": kind, "embedkit": __version__, "bytes": path.stat().st_size,
                                           "sha256": sha256_file(path)})


def output_file_kind(path: str | os.PathLike) -> str | None:
    """The kind of the embedkit output file ``path`` if its record (:func:`mark_output_file`) matches
    its current size and sha256; None otherwise (not written by embedkit, or changed since)."""
    path = Path(path)
    rec_path = _file_record(path)
    try:
        if (not rec_path.is_file() or rec_path.is_symlink() or rec_path.stat().st_size > 65536
                or not path.is_file() or path.is_symlink()):
            return None
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str):
            return None
        if rec.get("bytes") != path.stat().st_size or rec.get("sha256") != sha256_file(path):
            return None
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return rec["kind"]


def prepare_output_file(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                        inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out",
                        is_ours: Any = None) -> Path:
    """Check that the file ``path`` may receive an embedkit output of ``kind``; return it (not resolved).

    Allowed: a new path, or (with ``overwrite``) a file embedkit wrote as a ``kind`` output and nobody
    changed since (:func:`output_file_kind`; ``is_ours(path)`` may also accept a format's own mark,
    e.g. the generator tag of an HTML report). Refused with :class:`~embedkit.errors.OutputExistsError`
    (one line): a folder, any other existing file, and a path that is or lies inside one of ``inputs``.
    Write the file atomically, then call :func:`mark_output_file`.
    """
    from embedkit.errors import OutputExistsError

    raw = str(path)
    if not raw.strip():
        raise OutputExistsError(f"{option} is empty; name a new file")
    p = Path(path).expanduser()
    _check_inputs(p.resolve(), raw, inputs, option, "file")
    if p.is_dir():
        raise OutputExistsError(f"{option} {raw!r} is a folder; name a file")
    if not p.exists() and not p.is_symlink():
        return p
    if p.is_symlink() or not p.is_file():
        raise OutputExistsError(f"{option} {raw!r} is not a regular file; embedkit will not replace it")
    found = output_file_kind(p)
    if found is None and is_ours is not None and is_ours(p):
        found = kind
    if found is None:
        raise OutputExistsError(f"{option} {raw!r} exists and was not written by embedkit (or was changed since); "
                                "embedkit will not replace it — name a new file")
    if found != kind:
        raise OutputExistsError(f"{option} {raw!r} is an embedkit {found} file, not a {kind} file; embedkit will not "
                                "replace it — name a new file")
    if not overwrite:
        raise OutputExistsError(f"{option} {raw!r} already exists; pass --overwrite to replace it")
    return p


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_dir() -> Path:
    """The shared real-data folder: ``$EMBEDKIT_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("EMBEDKIT_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    return repo.parent / "shared" / "data"
