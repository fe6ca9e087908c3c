"""The candidate configurations of the index tuner (:mod:`embedkit.retrieval.tune`) and their byte accounting.

A candidate is one way to index a corpus: a model size (``layers`` x ``dim``: the full model, or a
size of the Matryoshka / Starbucks ladder it was trained with), a compression spec at that size, a
float16 rescoring depth, and a FAISS structure (flat, IVF with ``nprobe``, HNSW with ``M`` and
``efSearch``). Its bytes per vector are counted honestly and apart:

* ``code_bytes``: the codes (:func:`~embedkit.compression.spec.code_bytes_per_vector`, exact);
* ``rescore_bytes``: the float16 rescoring vectors at the spec's output dimension (``2 * dim``), when
  rescoring is on;
* ``structure_bytes``: what the FAISS structure keeps per vector besides the codes: 0 for flat, the
  8-byte id of an IVF list entry, the HNSW graph's links (4 bytes each: ``2M`` on level 0, ``M`` per
  upper level, ``1/(M-1)`` upper levels on average) plus its level and offset entries (12 bytes).

Their sum is what ``--budget-bytes`` bounds. Fixed costs (codebooks, IVF centroids, rotations) do not
grow with the corpus; they are measured in "RAM after load", which ``--max-ram`` bounds. The docstore
(texts, metadata, keyword index) is never counted.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from embedkit.compression.spec import check_spec, code_bytes_per_vector, spec_output_dim
from embedkit.errors import BudgetError, EmbedkitError

__all__ = ["MRL_CUTS", "MIN_CODE_BYTES", "Candidate", "codec_candidates", "model_sizes", "parse_size",
           "smallest_candidate", "structure_bytes"]

#: dimensions ``mrl:D`` may cut a model's output to (those below its width)
MRL_CUTS = (1024, 768, 512, 384, 256, 192, 128, 96, 64, 48, 32)
#: the smallest code the tuner proposes (a 32-bit code); smaller ones retrieve little
MIN_CODE_BYTES = 4
#: per-vector bytes of an HNSW node besides its links: level (int32) and offset (uint64)
_HNSW_NODE_BYTES = 12


@dataclass(frozen=True)
class Candidate:
    """One configuration: model size, compression spec, rescoring depth, FAISS structure."""

    layers: int
    dim: int
    spec: str
    rescore: int | None
    code_bytes: int
    rescore_bytes: int
    index_type: str = "flat"
    nprobe: int | None = None
    ef_search: int | None = None
    hnsw_m: int | None = None
    structure_bytes: int = 0

    @property
    def bytes_per_vector(self) -> int:
        """Code + rescoring + structure bytes per vector (what ``--budget-bytes`` bounds)."""
        return self.code_bytes + self.rescore_bytes + self.structure_bytes

    @property
    def size(self) -> tuple[int, int]:
        return self.layers, self.dim

    def with_index(self, index_type: str, *, nprobe: int | None = None, ef_search: int | None = None,
                   hnsw_m: int | None = None) -> Candidate:
        """The same codec under another FAISS structure (its structure bytes estimated)."""
        return dataclasses.replace(self, index_type=index_type, nprobe=nprobe, ef_search=ef_search, hnsw_m=hnsw_m,
                                   structure_bytes=structure_bytes(index_type, hnsw_m))

    @property
    def label(self) -> str:
        parts = [f"{self.layers}L/{self.dim}d", self.spec]
        if self.rescore:
            parts.append(f"rescore x{self.rescore}")
        if self.index_type == "ivf":
            parts.append(f"ivf nprobe {self.nprobe}")
        elif self.index_type == "hnsw":
            parts.append(f"hnsw{self.hnsw_m} ef {self.ef_search}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        return {"layers": self.layers, "dim": self.dim, "spec": self.spec, "rescore": self.rescore,
                "index_type": self.index_type, "nprobe": self.nprobe, "ef_search": self.ef_search,
                "hnsw_m": self.hnsw_m, "code_bytes_per_vector": self.code_bytes,
                "rescore_bytes_per_vector": self.rescore_bytes, "structure_bytes_per_vector": self.structure_bytes,
                "bytes_per_vector": self.bytes_per_vector}


def structure_bytes(index_type: str, hnsw_m: int | None = None) -> int:
    """Per-vector bytes of the FAISS structure besides the codes (see the module docstring)."""
    if index_type == "flat":
        return 0
    if index_type == "ivf":
        return 8
    if index_type == "hnsw":
        m = int(hnsw_m or 32)
        return round(4 * (2 * m + m / (m - 1))) + _HNSW_NODE_BYTES
    raise EmbedkitError(f"unknown index type {index_type!r}; use flat, ivf or hnsw")


def model_sizes(depth: int, width: int, trained: list[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """The model sizes to try: the full model, plus every size of the ladder it was trained with
    (``embedkit_sizes.json``, written at export by a Matryoshka / 2DMSE / Starbucks recipe)."""
    sizes = {(int(depth), int(width))}
    for layers, dim in trained or ():
        if 1 <= layers <= depth and 1 <= dim <= width:
            sizes.add((int(layers), int(dim)))
    return sorted(sizes, key=lambda s: (-s[0], -s[1]))


def _fits(spec: str, dim: int, n_train: int) -> bool:
    try:
        check_spec(spec, dim=dim, n_train=n_train)
    except EmbedkitError:
        return False
    return True


def _largest(values, ok):
    return next((v for v in sorted(values, reverse=True) if ok(v)), None)


def _codecs_at(dim: int, budget: float, n_train: int, mrl: bool, grid: bool = False) -> list[str]:
    """Specs (no rescoring) whose codes fit ``budget`` bytes, for ``dim``-dimensional input: per family the
    largest code that fits (fixed-rate families at the largest ``mrl:D`` cut that fits). ``grid``: every
    member that fits instead (every cut, every PQ M, every 32 bits of LSH/ITQ; OPQ at PQ's largest M only)."""
    dims = [dim] + ([d for d in MRL_CUTS if d < dim] if mrl else [])
    fixed = {"float": 4.0, "f16": 2.0, "int8": 1.0, "binary": 0.125}
    out = []
    if grid:
        cut = lambda d, body: body if d == dim else f"mrl:{d},{body}"  # noqa: E731
        for d in dims:
            out += [cut(d, f) for f, p in fixed.items() if MIN_CODE_BYTES <= d * p <= budget and d * p == int(d * p)]
            out += [cut(d, f"rabitq:{b}") for b in (1, 2, 4) if code_bytes_per_vector(cut(d, f"rabitq:{b}"), dim) <= budget]
        for nbits in (8, 4):
            out += [f"pq:{m}x{nbits}" for m in range(1, dim + 1) if dim % m == 0 and MIN_CODE_BYTES <= m * nbits / 8 <= budget]
        out += [f"lsh:{b}" for b in range(32, int(min(budget * 8, 32 * dim)) + 1, 32)]
        out += [f"itq:{b}" for b in range(32, int(min(budget * 8, dim)) + 1, 32)]
        out += [s for s in _codecs_at(dim, budget, n_train, mrl) if s.startswith("opq:")]
        return [s for s in dict.fromkeys(out) if _fits(s, dim, n_train)]

    def cut(d: int, body: str) -> str:
        return body if d == dim else f"mrl:{d},{body}"

    for fam, per_dim in fixed.items():
        d = _largest(dims, lambda d, p=per_dim: MIN_CODE_BYTES <= d * p <= budget and d * p == int(d * p))
        if d is not None:
            out.append(cut(d, fam))
    for fam, nbits in (("pq", 8), ("opq", 8), ("pq", 4)):
        m = _largest([m for m in range(1, dim + 1) if dim % m == 0],
                     lambda m, b=nbits: MIN_CODE_BYTES <= m * b / 8 <= budget)
        if m is not None:
            out.append(f"{fam}:{m}x{nbits}")
    bits = int(min(budget * 8, 32 * dim)) // 8 * 8
    if bits >= 8 * MIN_CODE_BYTES:
        out.append(f"lsh:{bits}")
    bits = int(min(budget * 8, dim)) // 8 * 8
    if bits >= 8 * MIN_CODE_BYTES:
        out.append(f"itq:{bits}")
    for nbits in (1, 2, 4):
        d = _largest(dims, lambda d, b=nbits: code_bytes_per_vector(cut(d, f"rabitq:{b}"), dim) <= budget)
        if d is not None:
            out.append(cut(d, f"rabitq:{nbits}"))
    return [s for s in dict.fromkeys(out) if _fits(s, dim, n_train)]


def codec_candidates(layers: int, dim: int, budget: float, *, n_train: int, mrl: bool = True,
                     rescore_depths: tuple[int, ...] = (4, 8), grid: bool = False) -> list[Candidate]:
    """Flat candidates at model size (``layers``, ``dim``) whose bytes per vector fit ``budget``.

    Without rescoring: per compression family the largest code that fits. With rescoring (each depth of
    ``rescore_depths``): the largest ``mrl:D`` cut whose float16 vectors (``2 * D`` bytes) leave room for a
    binary or ITQ code of it.
    """
    out = []
    for spec in _codecs_at(dim, budget, n_train, mrl, grid):
        out.append(Candidate(layers, dim, spec, None, code_bytes_per_vector(spec, dim), 0))
    if rescore_depths:
        dims = [dim] + ([d for d in MRL_CUTS if d < dim] if mrl else [])
        fit = [d for d in dims if 2 * d + max(MIN_CODE_BYTES, d / 8) <= budget and d % 8 == 0]
        for d in (fit if grid else fit[:1]):
            for body in ("binary", f"itq:{d}"):
                spec = body if d == dim else f"mrl:{d},{body}"
                if d / 8 >= MIN_CODE_BYTES and _fits(spec, dim, n_train):
                    for r in rescore_depths:
                        out.append(Candidate(layers, dim, spec, int(r), code_bytes_per_vector(spec, dim),
                                             2 * spec_output_dim(spec, dim)))
    return [c for c in out if c.bytes_per_vector <= budget]


def smallest_candidate(sizes: list[tuple[int, int]], *, n_train: int) -> Candidate:
    """The candidate with the fewest bytes per vector at any budget (what a too-small budget is told)."""
    small = []
    for layers, dim in sizes:
        for spec in ("lsh:32", "binary" if dim <= 32 else "mrl:32,binary", "pq:4x8"):
            if _fits(spec, dim, n_train):
                small.append(Candidate(layers, dim, spec, None, code_bytes_per_vector(spec, dim), 0))
    if not small:
        raise BudgetError("no compression spec fits these vectors (too few documents to fit any codec)")
    return min(small, key=lambda c: (c.bytes_per_vector, c.layers, c.spec))


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text, option: str = "--max-ram") -> int:
    """Bytes of a size such as ``"200MB"``, ``"1.5GiB"``, ``"64k"`` or ``"1000"`` (KB = 1000, KiB = 1024).

    Raises:
        EmbedkitError: (one line naming ``option``) not a positive size.
    """
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) * _UNITS[unit] < 1:
        raise EmbedkitError(f"{option} {text!r}: not a size; give bytes such as 200MB, 1.5GiB or 64000")
    return int(float(m.group(1)) * _UNITS[unit])


def encoder_at(model, size: tuple[int, int], full_size: tuple[int, int]):
    """The encoder of ``model`` cut to ``size`` (layers, dim): the model itself at ``full_size``; for a model
    loaded from a folder or name, ``load_encoder(source, layers=, dim=)`` (recorded in an index like any
    sub-model), else a cut copy."""
    from embedkit.models.identity import identity
    from embedkit.models.loading import load_encoder
    from embedkit.models.submodel import truncate_encoder

    if tuple(size) == tuple(full_size):
        return model
    layers, dim = size
    source = identity(model).source
    if source is not None:
        return load_encoder(source, layers=layers, dim=dim, device=str(model.device))
    return truncate_encoder(copy.deepcopy(model), layers=layers, dim=dim)


def model_shape(model):
    """``(encoder, sizes, ladder)``: the model loaded, its candidate sizes (full first) and its recorded ladder."""
    from embedkit.models.identity import identity
    from embedkit.models.loading import load_encoder
    from embedkit.models.submodel import model_depth, read_trained_sizes

    enc = load_encoder(model) if model is None or isinstance(model, str) or hasattr(model, "__fspath__") else model
    dim_of = getattr(enc, "get_embedding_dimension", None) or enc.get_sentence_embedding_dimension
    depth, width = model_depth(enc), int(dim_of())
    ladder = read_trained_sizes(identity(enc).source)
    return enc, model_sizes(depth, width, ladder["sizes"] if ladder else None), ladder
