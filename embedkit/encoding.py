"""Corpus -> float embedding shards on disk, resumable after a kill.

The folder format (``manifest.json``, ``shard-NNNNN.npy``, ``ids.json``, the output marker) and
reading it back (:func:`load_shards`, :func:`open_shards`) live in :mod:`embedkit.shards`; they are
re-exported here. This module is the writing side.

Every file is written atomically and the manifest records a shard's checksum right after the shard
is written, so rerunning the same command after a kill reuses the complete shards and encodes the
rest.

Spreading the work (see ``docs/scaling.md``):

* ``partition=(I, N)`` (``embedkit encode --shard I/N``) encodes a deterministic, contiguous 1/N of
  the shards, so N processes of any scheduler (Slurm array jobs, a shell loop) fill one folder
  together; the manifest is updated under a file lock, so they may run at the same time.
* :func:`encode_with_ray` (``embedkit encode --ray [ADDRESS]``) encodes the missing shards on a Ray
  cluster: a Ray Dataset of shards, ``map_batches`` over an actor pool (one model per actor, a GPU
  each when the cluster has them); the driver writes each shard as it arrives.

A shard is reused only if it passes the checks the embedding cache applies (checksum recorded
in the manifest, shape, dtype, finite values); any other shard is encoded again. Texts also go
through the embedding cache, so nothing is encoded twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from embedkit._io import atomic_save_npy, atomic_write_json, mark_output, output_kind, prepare_output, sha256_file
from embedkit.data.texts import MAX_TEXT_CHARS, check_texts, cut_texts
from embedkit.errors import EmbedkitError
from embedkit.shards import FORMAT, IDS_FILE, KIND, MANIFEST, ShardSet, load_shards, open_shards
from embedkit.shards import read_manifest as _read_manifest
from embedkit.shards import shard_name as _shard_name
from embedkit.shards import shard_ok as _shard_ok
from embedkit.shards import texts_digest as _texts_digest

__all__ = ["FORMAT", "ShardSet", "check_resume", "encode_command", "encode_to_shards", "encode_with_ray", "load_shards", "open_shards",
           "parse_partition", "partition_shards"]

logger = logging.getLogger(__name__)

_IDENTITY = ("texts_sha256", "count", "shard_size")
LOCK_FILE = ".embedkit-encode.lock"
_PARTITION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_partition(value, option: str = "--shard") -> tuple[int, int] | None:
    """``"I/N"`` (or a pair) -> ``(I, N)`` with ``0 <= I < N``; ``None`` stays ``None``.

    Example:
        >>> parse_partition("1/4")
        (1, 4)

    Raises:
        EmbedkitError: not of the form I/N with whole numbers, N < 1, or I outside 0..N-1.
    """
    if value is None:
        return None
    if isinstance(value, str):
        m = _PARTITION.match(value)
        if not m:
            raise EmbedkitError(f"{option} {value!r}: expected I/N, e.g. 0/4 for the first of 4 parts (I counts from 0)")
        i, n = int(m.group(1)), int(m.group(2))
    else:
        try:
            i, n = value
        except (TypeError, ValueError):
            raise EmbedkitError(f"{option} {value!r}: expected I/N or a pair (I, N)") from None
        if any(isinstance(x, bool) or not isinstance(x, int) for x in (i, n)):
            raise EmbedkitError(f"{option} {value!r}: I and N must be whole numbers")
    if n < 1:
        raise EmbedkitError(f"{option} {i}/{n}: N must be >= 1")
    if not 0 <= i < n:
        raise EmbedkitError(f"{option} {i}/{n}: I must be in 0..{n - 1} (I counts from 0: --shard 0/{n} ... "
                            f"--shard {n - 1}/{n} cover the corpus)")
    return i, n


def partition_shards(n_shards: int, part: tuple[int, int] | None) -> range:
    """The shard numbers partition ``(I, N)`` encodes: a contiguous block, the N blocks disjoint and complete.

    Example:
        >>> [list(partition_shards(5, (i, 2))) for i in range(2)]
        [[0, 1], [2, 3, 4]]
    """
    if part is None:
        return range(n_shards)
    i, n = part
    return range(i * n_shards // n, (i + 1) * n_shards // n)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (serialises manifest updates of concurrent encodes)."""
    import fcntl

    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _record_shard(folder: Path, manifest: dict, name: str, digest: str) -> None:
    """Record a finished shard's checksum, merging what concurrent partitions recorded meanwhile."""
    with _folder_lock(folder):
        try:
            on_disk = _read_manifest(folder)
        except EmbedkitError:
            on_disk = {}
        if all(on_disk.get(k) == manifest[k] for k in _IDENTITY):
            for k, v in on_disk.get("shard_sha256", {}).items():
                manifest["shard_sha256"].setdefault(k, v)
        manifest["shard_sha256"][name] = digest
        atomic_write_json(folder / MANIFEST, manifest)


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
    old_model = old.get("model") if isinstance(old.get("model"), dict) else {}
    if ({k: old.get(k) for k in _IDENTITY} != {k: manifest[k] for k in _IDENTITY}
            or old_model.get("fingerprint") != manifest["model"]["fingerprint"]
            or old_model.get("precision", "fp32") != manifest["model"]["precision"]):
        if not overwrite:
            raise EmbedkitError(f"{out} holds shards of another input or model; choose an empty --out folder "
                                "or pass --overwrite to replace them")
        _remove_outputs(path)
        return path, {}
    return path, dict(old.get("shard_sha256", {}))


def check_resume(out: str | os.PathLike, texts: Sequence[str], *, shard_size: int = 4096,
                 overwrite: bool = False) -> None:
    """The checks of an existing ``out`` folder that need no model (run them before loading one).

    A folder holding a shard manifest is resumed only if the manifest is readable and was written
    for the same texts and shard size; :func:`encode_to_shards` refuses anything else without
    ``overwrite``, but only after the model is loaded (it also compares the model's fingerprint).
    Nothing is written.

    Raises:
        EmbedkitError: (one line) an unreadable or foreign manifest, or shards of another input or
            shard size, unless ``overwrite``.
    """
    p = Path(out)
    if overwrite or not p.is_dir() or not (p / MANIFEST).exists():
        return
    old = _read_manifest(p)
    if old.get("count") != len(texts) or old.get("texts_sha256") != _texts_digest(texts):
        what = f"{old['count']} texts, not {len(texts)}" if old["count"] != len(texts) else "other texts"
        raise EmbedkitError(f"{out} holds shards of another input ({what}); choose an empty --out folder or pass "
                            "--overwrite to replace them")
    if old.get("shard_size") != shard_size:
        raise EmbedkitError(f"{out} holds shards of {old['shard_size']} texts each, not {shard_size}; rerun with "
                            f"--shard-size {old['shard_size']} to resume, or pass --overwrite to replace them")


def _start(model, texts, out, ids, shard_size, batch_size, overwrite, inputs, max_chars):
    """Validate, prepare ``out`` and write ids + manifest; return (folder, manifest, recorded, cut texts)."""
    from embedkit.models.loading import model_description, model_fingerprint
    from embedkit.models.pipeline import precision_of
    from embedkit.validation import check_positive_int

    check_texts(texts, "document")
    if not texts:
        raise EmbedkitError("nothing to encode: the input has no texts")
    shard_size = check_positive_int(shard_size, "shard_size")
    check_positive_int(batch_size, "batch_size")
    ids = _check_ids(ids, len(texts))
    cut, n_cut = cut_texts(texts, max_chars)
    if n_cut:
        logger.warning("cut %d text(s) longer than %d characters to their first %d before tokenizing",
                       n_cut, max_chars, max_chars)
    manifest = {
        "format": FORMAT,
        "model": {"source": model_description(model), "fingerprint": model_fingerprint(model),
                  "precision": precision_of(model)},
        "texts_sha256": _texts_digest(texts),
        "ids_sha256": _texts_digest(ids),
        "count": len(texts),
        "shard_size": shard_size,
        "dim": model.get_embedding_dimension(),
        "max_chars": max_chars,
        "texts_cut": n_cut,
        "shard_sha256": {},
    }
    p = Path(out)
    if p.is_dir() and not p.is_symlink() and _is_legacy_shards(p):
        mark_output(p, KIND)  # adopt a folder written by an earlier embedkit
    path = prepare_output(p, KIND, overwrite=True, inputs=inputs)
    path.mkdir(parents=True, exist_ok=True)
    mark_output(path, KIND)
    with _folder_lock(path):  # concurrent partitions: one prepares, the others find its manifest
        folder, recorded = _prepare_folder(path, manifest, overwrite, inputs)
        manifest["shard_sha256"] = recorded
        atomic_write_json(folder / IDS_FILE, ids)
        atomic_write_json(folder / MANIFEST, manifest)
    return folder, manifest, recorded, cut


def _reusable(folder: Path, name: str, recorded: dict, rows: int, dim: int) -> tuple[bool, bool]:
    """(reuse it, it was there but damaged)."""
    path = folder / name
    if not path.exists():
        return False, False
    why = _shard_ok(path, recorded.get(name), rows, dim)
    if why is None:
        return True, False
    logger.warning("%s: shard %s cannot be reused (%s); encoding it again", folder, name, why)
    return False, True


def encode_to_shards(model, texts: Sequence[str], out: str | os.PathLike, *, ids: Sequence[str] | None = None,
                     shard_size: int = 4096, batch_size: int = 64, show_progress: bool = True, cache=None,
                     overwrite: bool = False, inputs: Iterable[str | os.PathLike | None] = (),
                     max_chars: int | None = MAX_TEXT_CHARS, partition=None) -> dict:
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
        partition: ``(I, N)`` or ``"I/N"``: encode only the I-th of N contiguous blocks of shards
            (I counts from 0); N such runs, in any order or at the same time, fill the folder.

    Returns:
        The manifest, plus ``shards`` (number of shards), ``resumed_shards`` (reused from disk),
        ``reencoded_shards`` (found on disk but damaged or unverifiable, so encoded again),
        ``complete`` (every shard of the corpus is done) and, with ``partition``, ``partition``.

    Raises:
        EmbedkitError: bad texts, ids or sizes; ``out`` holds shards of another input or model, or
            an unreadable manifest (without ``overwrite``).
        OutputExistsError: ``out`` is a file, a folder holding something else, the current folder,
            or overlaps an input.
    """
    from tqdm.auto import tqdm

    from embedkit.cache import encode_cached

    part = parse_partition(partition, "partition (--shard)")
    folder, manifest, recorded, cut = _start(model, texts, out, ids, shard_size, batch_size, overwrite, inputs,
                                             max_chars)
    shard_size = manifest["shard_size"]
    n_shards = -(-len(texts) // shard_size)
    mine = partition_shards(n_shards, part)
    done = redone = 0
    total = sum(min(len(texts), (s + 1) * shard_size) - s * shard_size for s in mine)
    with tqdm(total=total, desc="encoding", unit="text", disable=not show_progress) as bar:
        for s in mine:
            lo, hi = s * shard_size, min(len(texts), (s + 1) * shard_size)
            name = _shard_name(s)
            reuse, damaged = _reusable(folder, name, recorded, hi - lo, manifest["dim"])
            redone += damaged
            if reuse:
                bar.update(hi - lo)
                done += 1
                continue
            vecs = encode_cached(model, cut[lo:hi], batch_size=batch_size, show_progress=False, cache=cache,
                                 max_chars=None)
            atomic_save_npy(folder / name, vecs)
            _record_shard(folder, manifest, name, sha256_file(folder / name))
            bar.update(hi - lo)
    if part is None:
        for extra in folder.glob("shard-*.npy"):  # shards beyond the count (none unless the folder was edited)
            if extra.name not in manifest["shard_sha256"]:
                extra.unlink()
    complete = sum(_shard_name(s) in manifest["shard_sha256"] for s in range(n_shards))
    out_info = {**manifest, "shards": n_shards, "resumed_shards": done, "reencoded_shards": redone,
                "complete": complete == n_shards}
    if part is not None:
        out_info["partition"] = {"index": part[0], "of": part[1], "shards": [mine.start, mine.stop]}
    return out_info


class _RayEncoder:
    """A Ray actor: loads the model once, encodes one shard of texts per call (``map_batches``)."""

    def __init__(self, source, fingerprint, batch_size, device, precision="fp32"):
        from embedkit.models.loading import load_encoder, model_fingerprint

        self.model = load_encoder(source, device=device, precision=precision)
        fp = model_fingerprint(self.model)
        if fingerprint is not None and fp != fingerprint:
            raise EmbedkitError(f"the model {source!r} on this Ray worker has fingerprint {fp}, the driver's "
                                f"{fingerprint}; install the same model on every node")
        self.batch_size = batch_size

    def __call__(self, batch):
        import numpy as np

        from embedkit.cache import encode_cached

        out_shard, out_bytes, out_rows = [], [], []
        for s, texts in zip(batch["shard"], batch["texts"]):
            texts = [str(t) for t in texts]
            vecs = encode_cached(self.model, texts, batch_size=self.batch_size, show_progress=False, cache=False,
                                 max_chars=None)
            out_shard.append(int(s))
            out_bytes.append(np.ascontiguousarray(vecs, dtype=np.float32).tobytes())
            out_rows.append(len(texts))
        return {"shard": np.array(out_shard, dtype=np.int64), "vecs": np.array(out_bytes, dtype=object),
                "rows": np.array(out_rows, dtype=np.int64)}


def encode_with_ray(model, texts: Sequence[str], out: str | os.PathLike, *, ids: Sequence[str] | None = None,
                    address: str | None = None, num_actors: int | None = None, shard_size: int = 4096,
                    batch_size: int = 64, show_progress: bool = True, overwrite: bool = False,
                    inputs: Iterable[str | os.PathLike | None] = (), max_chars: int | None = MAX_TEXT_CHARS,
                    partition=None, init_kwargs: dict | None = None) -> dict:
    """Like :func:`encode_to_shards`, but the missing shards are encoded on a Ray cluster.

    The shards still to encode become a Ray Dataset (one row per shard); ``map_batches`` runs them
    through a pool of :class:`_RayEncoder` actors (each loads the model once; one GPU per actor when
    the cluster has GPUs) and the driver writes every shard, with its checksum, as it arrives, so a
    rerun after a kill resumes like the single-process encode. The output folder is the same format:
    :func:`load_shards` and ``embedkit index build --embeddings`` read it.

    Args:
        model: the driver's encoder (its fingerprint is recorded and checked on every worker); the
            workers load it from its source (a folder every node can read, or a hub name).
        address: a Ray cluster address (``"auto"``, ``"ray://host:10001"``); ``None`` starts or joins
            a local Ray (``init_kwargs`` go to ``ray.init``, e.g. ``{"num_cpus": 2}``).
        num_actors: actor pool size (default: the cluster's GPUs, else its CPUs, at most the number
            of shards to encode).

    Raises:
        EmbedkitError: Ray is not installed (``pip install 'embedkit[ray]'``), or as
            :func:`encode_to_shards`.
    """
    try:
        import ray
        import ray.data
    except ImportError:
        raise EmbedkitError("--ray needs Ray: pip install 'embedkit[ray]' (or pip install 'ray[data]')") from None
    import numpy as np
    from tqdm.auto import tqdm

    from embedkit.models.loading import model_description

    part = parse_partition(partition, "partition (--shard)")
    folder, manifest, recorded, cut = _start(model, texts, out, ids, shard_size, batch_size, overwrite, inputs,
                                             max_chars)
    shard_size = manifest["shard_size"]
    n_shards = -(-len(texts) // shard_size)
    todo, done, redone = [], 0, 0
    for s in partition_shards(n_shards, part):
        lo, hi = s * shard_size, min(len(texts), (s + 1) * shard_size)
        reuse, damaged = _reusable(folder, _shard_name(s), recorded, hi - lo, manifest["dim"])
        redone += damaged
        done += reuse
        if not reuse:
            todo.append(s)
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, **(init_kwargs or {}), log_to_driver=False)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = num_actors or (gpus if gpus else cpus)
        size = max(1, min(int(size), len(todo)))
        source = model_description(model)
        rows = [{"shard": s, "texts": list(cut[s * shard_size: min(len(texts), (s + 1) * shard_size)])} for s in todo]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        kwargs = {"num_gpus": 1} if gpus else {"num_cpus": 1}
        ds = ds.map_batches(_RayEncoder, fn_constructor_args=(source, manifest["model"]["fingerprint"], batch_size,
                                                              "cuda" if gpus else "cpu", manifest["model"]["precision"]),
                            batch_size=1, concurrency=size, **kwargs)
        with tqdm(total=len(todo), desc="encoding on Ray", unit="shard", disable=not show_progress) as bar:
            for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
                for s, raw, n in zip(batch["shard"], batch["vecs"], batch["rows"]):
                    vecs = np.frombuffer(raw, dtype=np.float32).reshape(int(n), manifest["dim"])
                    name = _shard_name(int(s))
                    atomic_save_npy(folder / name, vecs)
                    _record_shard(folder, manifest, name, sha256_file(folder / name))
                    bar.update(1)
    complete = sum(_shard_name(s) in manifest["shard_sha256"] for s in range(n_shards))
    return {**manifest, "shards": n_shards, "resumed_shards": done, "reencoded_shards": redone,
            "complete": complete == n_shards, "ray_shards": len(todo)}


def encode_command(model, texts: Sequence[str], out: str | os.PathLike, *, ids: Sequence[str] | None = None,
                   ray: str | None = None, shard=None, shard_size: int = 4096, batch_size: int = 64,
                   show_progress: bool = True, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike | None] = ()) -> dict:
    """What ``embedkit encode`` runs once its options are parsed (the CLI only parses and calls this).

    Args:
        ray: ``None`` (no Ray), ``"local"`` (``--ray`` without an address: start or join a local Ray,
            or the cluster named by ``RAY_ADDRESS``) or a cluster address (``--ray ADDRESS``).
        shard: ``"I/N"`` (``--shard I/N``): encode only that part.
    """
    part = parse_partition(shard)
    if ray is not None:
        return encode_with_ray(model, texts, out, ids=ids, address=None if ray in ("", "local") else ray,
                               shard_size=shard_size, batch_size=batch_size, show_progress=show_progress,
                               overwrite=overwrite, inputs=inputs, partition=part)
    return encode_to_shards(model, texts, out, ids=ids, shard_size=shard_size, batch_size=batch_size,
                            show_progress=show_progress, overwrite=overwrite, inputs=inputs, partition=part)
