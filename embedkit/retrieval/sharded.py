"""Build an index from embedding shards (``embedkit index build --embeddings DIR``) without re-encoding.

With ``index_type="ivf"`` (the default) the build streams (see ``docs/scaling.md``):

1. the compression and the IVF coarse quantizer are trained on a seeded sample of the vectors
   (positioned reads, nothing memory-mapped);
2. each shard's codes go to their own inverted-list file (:func:`~embedkit.retrieval.ondisk.write_shard_lists`;
   on Ray tasks when ``ray_address`` is given);
3. the lists are merged into FAISS on-disk inverted lists (:func:`~embedkit.retrieval.ondisk.write_ondisk_lists`),
   the float16 rescoring vectors are appended shard by shard, the documents go into SQLite in batches.

Peak memory is one shard, the training sample and the coarse quantizer: never all codes or vectors.
The result is a disk-backed index (:class:`~embedkit.retrieval.ondisk.DiskIndex`), written into a
temporary folder and renamed into place, so a killed build leaves the previous index untouched.
Other index types (``flat``, ``hnsw``) load the vectors and build in memory, then save in the disk layout.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedkit._io import atomic_directory, mark_output, prepare_output
from embedkit.compression.base import check_nlist, l2_normalize
from embedkit.compression.spec import quantizer_from_spec
from embedkit.errors import EmbedkitError
from embedkit.validation import check_positive_int

__all__ = ["build_command", "build_index_from_shards", "default_sample_size"]

logger = logging.getLogger(__name__)

_DOC_BATCH = 5000


def default_sample_size(n: int, nlist: int) -> int:
    """Training vectors for a streamed IVF build: 40 per list (FAISS wants >= 39), at least 10,000,
    at most 200,000 and at most ``n``."""
    return int(min(n, max(10_000, min(200_000, 40 * nlist))))


def _ray_lists(ray_address, jobs):
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False)

    @ray.remote
    def one(work: str, shards: str, s: int, path: str) -> int:
        return _shard_job(Path(work), Path(shards), s, path)

    return ray.get([one.remote(*j) for j in jobs])


def _shard_job(work: Path, shards_dir: Path, s: int, path: str) -> int:
    """Encode shard ``s`` into its inverted-list file (runs in the driver or in a Ray task)."""
    import json

    from embedkit.compression.pipeline import CompressionPipeline
    from embedkit.retrieval.lists import deserialize_index, write_shard_lists
    from embedkit.shards import open_shards

    meta = json.loads((work / "build.json").read_text())
    shards = open_shards(shards_dir)
    compression = CompressionPipeline.load(work, "quantizer")
    proto = compression.new_index("flat")
    empty = deserialize_index((work / "trained.faiss").read_bytes(), bool(meta["binary"]))
    first, X = next(shards.iter_shards([s]))
    Xt = compression.transform(l2_normalize(X))
    return write_shard_lists(empty, proto.to_input(Xt), first, path)


def build_index_from_shards(embeddings: str | os.PathLike, out: str | os.PathLike, *, ids: Sequence[str] | None = None,
                            texts: Sequence[str] | None = None, metadata: Sequence[dict | None] | None = None,
                            corpus: str | os.PathLike | None = None,
                            spec: str = "float", index_type: str | None = None, rescore: int | None = None,
                            nlist: int | None = None, hnsw_m: int = 32, nprobe: int | None = None,
                            ef_search: int | None = None, sample_size: int | None = None, seed: int = 0,
                            model=None, ray_address: str | None = None, overwrite: bool = False,
                            inputs: Sequence[str | os.PathLike] = (), corpus_name: str = "the corpus",
                            show_progress: bool = False, backend: str | None = None):
    """Build a disk-backed index at ``out`` from the shards folder ``embeddings`` and its corpus.

    Args:
        embeddings: a finished ``embedkit encode`` folder (every shard present).
        ids, texts, metadata: the corpus the shards were encoded from, in the same order (the ids
            must equal the shards' ``ids.json``).
        corpus: instead of ``ids``/``texts``/``metadata``, the corpus file or BEIR folder (any shape
            :func:`~embedkit.data.read_corpus` reads). With ``index_type="ivf"`` it is streamed twice
            (checked, then written to the docstore in batches), so the documents are never all in
            memory: their ids are compared with the shards' recorded ``ids_sha256``.
        spec, index_type, rescore, nlist, hnsw_m, nprobe, ef_search: as for :meth:`EmbeddingIndex.build`,
            but ``index_type`` defaults to ``"ivf"`` (``backend=`` is its deprecated old name).
        sample_size: vectors the compression and the coarse quantizer are trained on (default
            :func:`default_sample_size`), drawn with ``seed``.
        model: the encoder object or source used at query time (checked against the shards'
            fingerprint when given); default: the model recorded in the shards' manifest.
        ray_address: build the per-shard inverted lists as Ray tasks (``"auto"``, an address, or
            ``"local"`` for a local Ray); the workers must see ``embeddings`` and ``out``'s folder.
        overwrite: replace an existing embedkit index at ``out``.

    Returns:
        The saved index, loaded (a :class:`~embedkit.retrieval.ondisk.DiskIndex`).

    Raises:
        EmbedkitError: (one line, naming the file) a missing or damaged shard, shards of different
            dimensions, ids that do not match the corpus, a spec FAISS IVF cannot hold, bad sizes.
        OutputExistsError: ``out`` is not a new/empty folder or an embedkit index (or is an input).
    """
    from embedkit.retrieval.index import EmbeddingIndex
    from embedkit.shards import open_shards

    t0 = time.perf_counter()
    shards = open_shards(embeddings)
    target = prepare_output(out, "index", overwrite=overwrite, inputs=[embeddings, *inputs, *([corpus] if corpus else [])])
    if (corpus is None) == (texts is None) or (corpus is not None and (ids is not None or metadata is not None)):
        raise EmbedkitError("give either corpus= (a file or BEIR folder) or ids= and texts= (the documents), not both")
    from embedkit.retrieval.common import resolve_index_type

    backend = "ivf" if index_type is None and backend is None else resolve_index_type(index_type, backend)
    if corpus is not None and backend != "ivf":
        from embedkit.data import read_corpus

        corpus_name = str(corpus)
        ids, texts, metadata = read_corpus(corpus)
        corpus = None
    if corpus is not None:
        docs = _StreamedCorpus(corpus)
        docs.check(shards)
    else:
        if ids is None:
            raise EmbedkitError("ids= is required with texts= (the shards' ids, in order)")
        shards.check_ids(list(ids), corpus_name)
        if len(texts) != shards.count:
            raise EmbedkitError(f"{corpus_name}: {len(texts)} texts for {shards.count} ids")
        from embedkit.data.documents import validate_documents

        docs = validate_documents(texts, ids, metadata, on_empty="error")
    fp = shards.model.get("fingerprint")
    if model is not None and not isinstance(model, (str, os.PathLike)):
        from embedkit.models.loading import model_fingerprint

        got = model_fingerprint(model)
        if fp and got != fp:
            from embedkit.errors import ModelMismatchError

            raise ModelMismatchError(f"{Path(embeddings) / 'manifest.json'}: the shards were encoded with model "
                                     f"fingerprint {fp}, the given model has {got}; pass the model they were encoded with")
    if backend != "ivf":
        X = np.concatenate([x for _, x in shards.iter_shards()])
        idx = EmbeddingIndex.build(docs.texts, docs.ids, docs.metadata, model=model, spec=spec, index_type=backend,
                                   rescore=rescore, embeddings=X, nlist=nlist, hnsw_m=hnsw_m, nprobe=nprobe,
                                   ef_search=ef_search, show_progress=False, on_empty="error")
        _record_model(idx, shards, model)
        del X
        idx.build_seconds = time.perf_counter() - t0
        idx.save(target, layout="disk")
        return EmbeddingIndex.load(target, model=model if not isinstance(model, (str, os.PathLike)) else None,
                                   verify=False)
    return _build_ivf(shards, target, docs, spec=spec, rescore=rescore, nlist=nlist, hnsw_m=hnsw_m, nprobe=nprobe,
                      ef_search=ef_search, sample_size=sample_size, seed=seed, model=model, ray_address=ray_address,
                      t0=t0)


def _record_model(idx, shards, model) -> None:
    if model is None or isinstance(model, (str, os.PathLike)):
        idx.model_source = str(model) if model is not None else shards.model.get("source")
        idx.model_fingerprint = shards.model.get("fingerprint")


def _build_ivf(shards, target: Path, docs, *, spec, rescore, nlist, hnsw_m, nprobe, ef_search, sample_size, seed,
               model, ray_address, t0):
    import json

    from embedkit.retrieval.index import EmbeddingIndex
    from embedkit.retrieval.lists import ListsFile, serialize_index, write_ondisk_lists
    from embedkit.retrieval.ondisk import DiskIndex

    n = shards.count
    nlist = check_nlist(nlist, n)
    sample_size = default_sample_size(n, nlist) if sample_size is None else check_positive_int(sample_size, "sample_size")
    sample_size = min(sample_size, n)
    if nlist > sample_size:
        raise EmbedkitError(f"nlist {nlist} needs at least {nlist} training vectors; sample_size is {sample_size}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=sample_size, replace=False))
    sample = l2_normalize(shards.read_rows(rows), copy=False)  # in place: no second copy of the sample at peak
    index = DiskIndex(None, spec, index_type="ivf", rescore=rescore, nlist=nlist, hnsw_m=hnsw_m, nprobe=nprobe,
                      ef_search=ef_search)
    index.compression = quantizer_from_spec(spec).fit(sample)
    index.dim = shards.dim
    index._init_codec()
    code_index = index.compression.new_index("ivf", nlist=nlist, train_X=sample)
    del sample
    import faiss

    empty = code_index.index
    from embedkit.compression.base import ivf_of

    ivf_of(empty).set_direct_map_type(faiss.DirectMap.NoMap)
    index._empty_bytes = serialize_index(empty)
    _record_model(index, shards, model)
    if model is not None and not isinstance(model, (str, os.PathLike)):
        index._set_model(model)
    rdim = index.rescore_dim
    with atomic_directory(target) as tmp:
        work = tmp / ".build"
        work.mkdir()
        index.compression.save(work, "quantizer")
        (work / "trained.faiss").write_bytes(index._empty_bytes)
        (work / "build.json").write_text(json.dumps({"binary": index._binary}))
        list_paths = [str(work / f"lists-{s:05d}.bin") for s in range(shards.n_shards)]
        jobs = [(str(work), str(shards.folder), s, list_paths[s]) for s in range(shards.n_shards)]
        if ray_address is not None:
            counts = _ray_lists(None if ray_address == "local" else ray_address, jobs)
            logger.info("built %d shard list files on Ray", len(counts))
        rescore_path = tmp / "seg-00000.f16.npy"
        rf = open(rescore_path, "wb") if rescore else None  # noqa: SIM115
        try:
            if rf is not None:
                np.lib.format.write_array_header_1_0(rf, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")),
                                                          "fortran_order": False, "shape": (n, rdim)})
            proto = index.compression.new_index("flat")
            for s, (first, X) in enumerate(shards.iter_shards()):
                Xt = index.compression.transform(l2_normalize(X))
                if ray_address is None:
                    from embedkit.retrieval.lists import write_shard_lists

                    write_shard_lists(empty, proto.to_input(Xt), first, list_paths[s])
                if rf is not None:
                    rf.write(np.ascontiguousarray(Xt, dtype="<f2").tobytes())
                del X, Xt
            if rf is not None:
                rf.flush()
                os.fsync(rf.fileno())
        finally:
            if rf is not None:
                rf.close()
        from embedkit.retrieval.manifest import file_entries

        files = write_ondisk_lists(empty, [ListsFile(p) for p in list_paths], tmp / "seg-00000.faiss",
                                   tmp / "seg-00000.ivfdata")
        for p in list_paths:
            os.unlink(p)
        _write_docs(tmp / "seg-00000.sqlite", docs)
        names = ["seg-00000.sqlite"] + (["seg-00000.f16.npy"] if rescore else [])
        files.update(file_entries(tmp, names))
        for p in work.iterdir():
            p.unlink()
        work.rmdir()
        index.compression.save(tmp, "quantizer")
        from embedkit._io import atomic_write_bytes
        from embedkit.retrieval.manifest import EMPTY_INDEX, FORMAT_DISK, write_manifest

        atomic_write_bytes(tmp / EMPTY_INDEX, index._empty_bytes)
        files.update(file_entries(tmp, ["quantizer.json", "quantizer.npz", EMPTY_INDEX]))
        index._next_key = n
        index.build_seconds = time.perf_counter() - t0
        fields = index._manifest_fields([{"name": "seg-00000", "start": 0, "count": n, "ivfdata": True}], None, 0, files)
        mark_output(tmp, "index")
        write_manifest(tmp, {"format": FORMAT_DISK, **fields})
    return EmbeddingIndex.load(target, model=model if model is not None and not isinstance(model, (str, os.PathLike))
                               else None, verify=False)


def _doc_rows(docs):
    """Docstore rows ``(key, id, text, metadata JSON)`` of in-memory documents, in batches."""
    import json

    for s in range(0, len(docs), _DOC_BATCH):
        yield [(s + j, i, t, json.dumps(m) if m is not None else None) for j, (i, t, m) in
               enumerate(zip(docs.ids[s: s + _DOC_BATCH], docs.texts[s: s + _DOC_BATCH], docs.metadata[s: s + _DOC_BATCH]))]


class _StreamedCorpus:
    """A corpus file read twice, one document at a time: :meth:`check`, then :meth:`batches` for the docstore."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def check(self, shards) -> None:
        """Refuse (one line, naming file:line) a blank or malformed document, or ids other than the shards'."""
        from embedkit.data import is_blank, iter_corpus
        from embedkit.shards import IDS_FILE, texts_digest

        recorded = shards.manifest.get("ids_sha256")
        if recorded is None:  # shards of an older embedkit: no digest to compare with, so compare the lists
            shards.check_ids([d for _, d, _, _ in iter_corpus(self.path)], str(self.path))
        self.count = 0

        def checked_ids():
            for where, did, text, _ in iter_corpus(self.path):
                if is_blank(text):
                    raise EmbedkitError(f"{where}: document {did!r} is blank; an index cannot hold it, but the shards "
                                        "have a vector for it: remove it from the corpus and re-encode")
                self.count += 1
                yield did

        digest = texts_digest(checked_ids())  # the digest `embedkit encode` recorded, computed the same way
        if self.count != shards.count:
            raise EmbedkitError(f"{shards.folder / IDS_FILE}: {shards.count} embeddings but {self.path} has "
                                f"{self.count} documents; encode this corpus (embedkit encode) or pass the corpus it "
                                "was encoded from")
        if recorded is not None and digest != recorded:
            shards.check_ids([d for _, d, _, _ in iter_corpus(self.path)], str(self.path))  # names the first difference
            raise EmbedkitError(f"{self.path}: its ids differ from those {shards.folder} was encoded from; "
                                "pass the corpus the embeddings were encoded from")

    def batches(self):
        import json

        from embedkit.data import iter_corpus

        batch = []
        for key, (_, did, text, meta) in enumerate(iter_corpus(self.path)):
            batch.append((key, did, text, json.dumps(meta) if meta is not None else None))
            if len(batch) == _DOC_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def _write_docs(path: Path, docs) -> None:
    from embedkit.retrieval.docstore import SCHEMA
    from embedkit.retrieval.keyword import enable_keyword

    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(SCHEMA)
        for rows in (docs.batches() if isinstance(docs, _StreamedCorpus) else _doc_rows(docs)):
            conn.executemany("INSERT INTO docs (key, id, text, metadata) VALUES (?, ?, ?, ?)", rows)
        conn.commit()
        enable_keyword(conn)  # the keyword index, built once over all documents (FTS5 'rebuild')
        conn.execute("PRAGMA synchronous=FULL")
    finally:
        conn.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_command(embeddings: str | os.PathLike, corpus: str | os.PathLike, out: str | os.PathLike, *,
                  spec: str = "float", index_type: str = "ivf", rescore: int | None = None, nlist: int | None = None,
                  nprobe: int | None = None, ef_search: int | None = None, model=None, overwrite: bool = False,
                  ray: str | None = None) -> dict:
    """What ``embedkit index build --embeddings DIR --corpus C`` runs (the CLI only parses and calls this).

    Returns the summary the CLI prints (``--json``).
    """
    from embedkit.retrieval.manifest import directory_size

    t = time.perf_counter()
    idx = build_index_from_shards(embeddings, out, corpus=corpus, spec=spec, index_type=index_type,
                                  rescore=rescore, nlist=nlist, nprobe=nprobe, ef_search=ef_search, model=model,
                                  overwrite=overwrite, corpus_name=str(corpus),
                                  ray_address=None if ray is None else ("local" if ray in ("", "local") else ray))
    return {"out": str(out), "documents": len(idx), "skipped_documents": 0, "spec": idx.compression.spec,
            "index_type": index_type, "rescore": rescore, "nprobe": idx.nprobe, "ef_search": idx.ef_search,
            "bytes_per_vector": idx.bytes_per_vector, "index_bytes_on_disk": directory_size(out),
            "build_seconds": time.perf_counter() - t, "layout": "disk"}
