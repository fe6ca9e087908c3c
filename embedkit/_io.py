"""Atomic file and folder writes, checksums, and the data-folder lookup shared by all modules."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
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


# --- output folders: replace only what embedkit itself wrote ---------------------------------

OUTPUT_MARKER = "embedkit-output.json"


def mark_output(folder: str | os.PathLike, kind: str) -> None:
    """Write the marker that says ``folder`` is an embedkit output of ``kind`` (call before committing)."""
    from embedkit import __version__

    atomic_write_json(Path(folder) / OUTPUT_MARKER, {"kind": kind, "embedkit": __version__})


def output_kind(path: str | os.PathLike) -> str | None:
    """The kind of embedkit output at ``path`` (``"index"``, ``"model"``, ...), or None if it is not one."""
    path = Path(path)
    marker = path / OUTPUT_MARKER
    try:
        if marker.is_file() and marker.stat().st_size < 65536:
            kind = json.loads(marker.read_text()).get("kind")
            return kind if isinstance(kind, str) else None
    except (OSError, ValueError, AttributeError):
        return None
    # outputs written before the marker existed
    manifest = path / "manifest.json"
    try:
        if manifest.is_file() and manifest.stat().st_size < (1 << 20):
            fmt = json.loads(manifest.read_text()).get("format")
            if isinstance(fmt, str) and fmt.startswith("embedkit.index/"):
                return "index"
    except (OSError, ValueError, AttributeError):
        return None
    return None


def _same_or_inside(a: Path, b: Path) -> bool:
    """True if ``a`` is ``b`` or lies inside ``b``."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def prepare_output(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out") -> Path:
    """Check that ``path`` may receive an embedkit output of ``kind``; return it resolved.

    Allowed: a path that does not exist, an empty folder, or (with ``overwrite``) an existing embedkit
    output of the same kind. Refused with :class:`~embedkit.errors.OutputExistsError` (one line): a
    file, a folder holding anything else, the current folder or one of its parents, and a path that
    is, contains or lies inside one of ``inputs`` — nothing the user already had is ever replaced.
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
    for inp in inputs:
        if inp is None:
            continue
        q = Path(inp).expanduser().resolve()
        if _same_or_inside(p, q) or _same_or_inside(q, p):
            raise OutputExistsError(f"{option} {raw!r} would overwrite the input {str(inp)!r}; name another folder")
    if not p.exists() and not p.is_symlink():
        return p
    if not p.is_dir() or p.is_symlink():
        raise OutputExistsError(f"{option} {raw!r} exists and is not a folder; embedkit will not replace it")
    if not any(p.iterdir()):
        return p
    found = output_kind(p)
    if found == kind:
        if overwrite:
            return p
        raise OutputExistsError(f"{option} {raw!r} already holds an embedkit {kind}; pass --overwrite to replace it")
    what = f"an embedkit {found}, not a {kind}" if found else f"not empty and not an embedkit {kind}"
    raise OutputExistsError(f"{option} {raw!r} is {what}; embedkit will not replace it — name a new folder")


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
