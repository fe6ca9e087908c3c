"""FAISS inverted lists on disk: list files per shard, their merge into ``OnDiskInvertedLists``, and
the (de)serialisation of the FAISS indexes a disk-backed segment holds.

IVF inverted lists are written by :func:`write_ondisk_lists` with ordinary sequential writes, list
by list, from per-shard list files (or from an in-memory IVF): the same file layout FAISS'
``merge_ondisk`` produces, without holding the codes in memory or dirtying a shared mapping (whose
pages would count in the builder's RSS). Used by :mod:`embedkit.retrieval.sharded` (streamed builds)
and :mod:`embedkit.retrieval.ondisk` (saving a segment).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from embedkit._io import atomic_write_bytes
from embedkit.compression.base import ivf_of
from embedkit.errors import EmbedkitError, IndexFormatError
from embedkit.retrieval.manifest import file_entries, sample_sha256

__all__ = ["LIST_CHUNK_BYTES", "ListsFile", "deserialize_index", "is_binary_index", "read_segment_index",
           "serialize_index", "write_ondisk_lists", "write_shard_lists"]

#: bytes of inverted-list data held in memory at a time while merging lists
LIST_CHUNK_BYTES = 64 << 20
_LISTS_MAGIC = b"EKL1"


# -- FAISS helpers ---------------------------------------------------------------------------------
def is_binary_index(index) -> bool:
    import faiss

    return isinstance(index, faiss.IndexBinary)


def serialize_index(index) -> bytes:
    import faiss

    if is_binary_index(index):
        return faiss.serialize_index_binary(index).tobytes()
    return faiss.serialize_index(index).tobytes()


def deserialize_index(data: bytes, binary: bool, flags: int = 0):
    import faiss

    reader = faiss.VectorIOReader()
    faiss.copy_array_to_vector(np.frombuffer(data, dtype=np.uint8), reader.data)
    return faiss.read_index_binary(reader, flags) if binary else faiss.read_index(reader, flags)


def _ilod_block(nlist: int, code_size: int, lists: np.ndarray, filename: bytes, totsize: int) -> bytes:
    """FAISS' serialisation of ``OnDiskInvertedLists`` (fourcc ``ilod``): lists are (size, capacity, offset)."""
    return (b"ilod" + struct.pack("<qq", nlist, code_size) + struct.pack("<q", nlist)
            + np.ascontiguousarray(lists, dtype="<u8").tobytes() + struct.pack("<q", 0)
            + struct.pack("<q", len(filename)) + filename + struct.pack("<q", totsize))


def _split_ilod(data: bytes) -> tuple[bytes, int, int, np.ndarray, bytes, int]:
    """(header, nlist, code_size, lists, filename, totsize) of an index whose last part is an ``ilod`` block."""
    pos = data.rfind(b"ilod")
    while pos >= 0:
        try:
            nlist, code_size, n = struct.unpack_from("<qqq", data, pos + 4)
            if n == nlist and 0 < nlist < (1 << 31):
                o = pos + 28
                lists = np.frombuffer(data, dtype="<u8", count=3 * nlist, offset=o).reshape(nlist, 3)
                o += 24 * nlist
                (nslots,) = struct.unpack_from("<q", data, o)
                o += 8 + 16 * nslots
                (nfn,) = struct.unpack_from("<q", data, o)
                fname = data[o + 8: o + 8 + nfn]
                (totsize,) = struct.unpack_from("<q", data, o + 8 + nfn)
                if o + 16 + nfn == len(data) and nslots == 0:
                    return data[:pos], nlist, code_size, lists, fname, totsize
        except struct.error:
            pass
        pos = data.rfind(b"ilod", 0, pos)
    raise ValueError("no on-disk inverted lists block at the end of the index")


def _ondisk_header(index, ntotal: int) -> bytes:
    """The serialisation of trained, empty IVF ``index`` up to its inverted lists, with ``ntotal`` set."""
    import faiss

    clone = deserialize_index(serialize_index(index), is_binary_index(index))
    ivf = ivf_of(clone)
    placeholder = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, "")
    ivf.replace_invlists(placeholder, True)
    placeholder.this.disown()
    clone.ntotal = ntotal
    ivf.ntotal = ntotal
    return _split_ilod(serialize_index(clone))[0]


def read_segment_index(faiss_path: Path, ivfdata: Path | None, binary: bool):
    """Open a segment's FAISS index without reading its codes (on-disk lists or a memory map).

    Raises:
        IndexFormatError: the file is not a FAISS index of the expected kind.
    """
    import faiss

    try:
        if ivfdata is not None:
            header, nlist, cs, lists, _, totsize = _split_ilod(Path(faiss_path).read_bytes())
            if lists.size and int((lists[:, 2] + lists[:, 1] * (cs + 8)).max()) > os.path.getsize(ivfdata):
                raise ValueError(f"{ivfdata.name} is shorter than its lists")
            data = header + _ilod_block(nlist, cs, lists, os.fsencode(Path(ivfdata).absolute()), totsize)
            return deserialize_index(data, binary, faiss.IO_FLAG_READ_ONLY)
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
        return faiss.read_index_binary(str(faiss_path), flags) if binary else faiss.read_index(str(faiss_path), flags)
    except (RuntimeError, ValueError, struct.error) as e:
        raise IndexFormatError(f"{faiss_path}: not a readable segment index ({str(e).splitlines()[0][:160]}); "
                               "rebuild the index") from None


# -- inverted-list files ---------------------------------------------------------------------------
class ListsFile:
    """One shard's inverted lists: ``EKL1``, nlist, code_size, sizes[nlist], codes (list order), ids."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            head = f.read(20)
            if head[:4] != _LISTS_MAGIC:
                raise EmbedkitError(f"{self.path}: not an embedkit inverted-lists file")
            self.nlist, self.code_size = struct.unpack("<qq", head[4:20])
            self.sizes = np.frombuffer(f.read(8 * self.nlist), dtype="<i8").astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.total = int(self.starts[-1])
        self.codes_at = 20 + 8 * self.nlist
        self.ids_at = self.codes_at + self.total * self.code_size
        if os.path.getsize(self.path) != self.ids_at + 8 * self.total:
            raise EmbedkitError(f"{self.path}: truncated inverted-lists file; rerun the build")

    def read(self, fd: int, l0: int, l1: int) -> tuple[np.ndarray, np.ndarray]:
        """Codes ``(n, code_size)`` and ids of lists ``l0 .. l1-1`` (positioned reads)."""
        a, b = int(self.starts[l0]), int(self.starts[l1])
        codes = np.frombuffer(os.pread(fd, (b - a) * self.code_size, self.codes_at + a * self.code_size),
                              dtype=np.uint8).reshape(b - a, self.code_size)
        ids = np.frombuffer(os.pread(fd, (b - a) * 8, self.ids_at + a * 8), dtype="<i8")
        return codes, ids


def _lists_of(index) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """(sizes, codes per list, ids per list) of an in-memory IVF index."""
    import faiss

    ivf = ivf_of(index)
    il, cs = ivf.invlists, ivf.code_size
    sizes = np.array([il.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)
    codes, ids = [], []
    for i, n in enumerate(sizes):
        n = int(n)
        codes.append(faiss.rev_swig_ptr(il.get_codes(i), n * cs).reshape(n, cs).copy() if n else
                     np.zeros((0, cs), np.uint8))
        ids.append(faiss.rev_swig_ptr(il.get_ids(i), n).copy() if n else np.zeros(0, np.int64))
    return sizes, codes, ids


def write_shard_lists(empty_index, inputs: np.ndarray, first_label: int, path: str | os.PathLike) -> int:
    """Add one shard to a copy of the trained, empty IVF ``empty_index`` and write its lists to ``path``.

    ``inputs`` are what the FAISS index takes (floats after the spec's transforms, or packed bits);
    labels are ``first_label + row``. Returns the number of vectors. Memory: one shard's codes.
    """
    import faiss

    index = deserialize_index(serialize_index(empty_index), is_binary_index(empty_index))
    ivf = ivf_of(index)
    ivf.set_direct_map_type(faiss.DirectMap.NoMap)
    labels = np.arange(first_label, first_label + len(inputs), dtype=np.int64)
    index.add_with_ids(inputs, labels)
    sizes, codes, ids = _lists_of(index)
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(_LISTS_MAGIC + struct.pack("<qq", ivf.nlist, ivf.code_size))
        f.write(sizes.astype("<i8").tobytes())
        for c in codes:
            f.write(c.tobytes())
        for i in ids:
            f.write(i.astype("<i8").tobytes())
    os.replace(tmp, path)
    return len(inputs)


def _hashing_writer(path: Path):
    h = hashlib.sha256()
    f = open(path, "wb")  # noqa: SIM115 - closed by the caller

    def write(b: bytes) -> None:
        f.write(b)
        h.update(b)

    return f, write, h


def write_ondisk_lists(empty_index, sources, faiss_path: str | os.PathLike, ivfdata_path: str | os.PathLike) -> dict:
    """Merge inverted lists into FAISS on-disk lists: ``ivfdata_path`` + the index header ``faiss_path``.

    Args:
        empty_index: the trained, empty IVF index (float or binary) the lists belong to.
        sources: :class:`ListsFile` objects (per-shard files, merged in order), or one in-memory IVF
            index whose lists are written.

    Lists are written one chunk (about :data:`LIST_CHUNK_BYTES`) at a time with sequential writes:
    codes, then labels, per list, exactly where ``OnDiskInvertedLists`` expects them. Returns the
    ``file_entries`` of both files (hashed while writing).
    """
    faiss_path, ivfdata_path = Path(faiss_path), Path(ivfdata_path)
    ivf = ivf_of(empty_index)
    nlist, cs = int(ivf.nlist), int(ivf.code_size)
    in_memory = not isinstance(sources, (list, tuple))
    if in_memory:
        sizes, mem_codes, mem_ids = _lists_of(sources)
    else:
        for src in sources:
            if src.nlist != nlist or src.code_size != cs:
                raise EmbedkitError(f"{src.path}: lists of another index (nlist {src.nlist}, code size {src.code_size})")
        sizes = np.sum([src.sizes for src in sources], axis=0) if sources else np.zeros(nlist, np.int64)
    lists = np.zeros((nlist, 3), dtype=np.uint64)
    tmp = ivfdata_path.with_name(f".{ivfdata_path.name}.tmp")
    f, write, h = _hashing_writer(tmp)
    fds = [] if in_memory else [os.open(src.path, os.O_RDONLY) for src in sources]
    offset = 0
    try:
        l0 = 0
        while l0 < nlist:
            # a chunk of lists holding about LIST_CHUNK_BYTES
            l1, acc = l0, 0
            while l1 < nlist and (l1 == l0 or acc + int(sizes[l1]) * (cs + 8) <= LIST_CHUNK_BYTES):
                acc += int(sizes[l1]) * (cs + 8)
                l1 += 1
            if in_memory:
                parts = [(mem_codes[l0:l1], mem_ids[l0:l1])]
            else:
                parts = []
                for src, fd in zip(sources, fds):
                    codes, ids = src.read(fd, l0, l1)
                    bounds = src.starts[l0:l1 + 1] - src.starts[l0]
                    parts.append(([codes[bounds[j]:bounds[j + 1]] for j in range(l1 - l0)],
                                  [ids[bounds[j]:bounds[j + 1]] for j in range(l1 - l0)]))
            for j in range(l1 - l0):
                n = int(sizes[l0 + j])
                lists[l0 + j] = (n, n, offset)
                for codes, _ in parts:
                    if len(codes[j]):
                        write(np.ascontiguousarray(codes[j]).tobytes())
                for _, ids in parts:
                    if len(ids[j]):
                        write(np.ascontiguousarray(ids[j], dtype="<i8").tobytes())
                offset += n * (cs + 8)
            l0 = l1
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()
        for fd in fds:
            os.close(fd)
    os.replace(tmp, ivfdata_path)
    ntotal = int(sizes.sum())
    header = _ondisk_header(empty_index, ntotal)
    data = header + _ilod_block(nlist, cs, lists, os.fsencode(ivfdata_path.name), offset)
    atomic_write_bytes(faiss_path, data)
    entries = file_entries(faiss_path.parent, [faiss_path.name])
    entries[ivfdata_path.name] = {"sha256": h.hexdigest(), "bytes": offset}
    if offset > (64 << 20):
        entries[ivfdata_path.name]["sample_sha256"] = sample_sha256(ivfdata_path)
    return entries
