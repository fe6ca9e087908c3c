"""EmbeddingIndex: a corpus turned into a compressed, searchable, persistent FAISS index.

Folder layout written by :meth:`EmbeddingIndex.save` (atomically: a temporary folder renamed into
place, so a crash never leaves a half-written index)::

    INDEX/
      manifest.json    format, model (source + fingerprint), spec, backend, dim, count, metric,
                       rescore factor, build time, sha256 + size of every file, its own checksum
      quantizer.json   compression stages (spec + per-stage config)
      quantizer.npz    learned parameters (numpy arrays, no pickle)
      index.faiss      the FAISS index over the codes (FAISS' own serialisation)
      rescore.f16.npy  optional float16 vectors for rescoring (memory-mapped on load)
      docs.sqlite      key, id, text, metadata (JSON)
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embedkit._io import atomic_directory, atomic_save_npy, sha256_file
from embedkit.compression.base import check_matrix, l2_normalize
from embedkit.compression.pipeline import CompressionPipeline
from embedkit.compression.spec import quantizer_from_spec
from embedkit.errors import EmbedkitError, IndexFormatError, ModelMismatchError
from embedkit.retrieval.docstore import DocStore

FORMAT = "embedkit.index/1"
_DATA_FILES = ("quantizer.json", "quantizer.npz", "index.faiss", "docs.sqlite", "rescore.f16.npy")


@dataclass
class Hit:
    """One search result."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] | None = field(default=None)


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class EmbeddingIndex:
    """Encode, compress and index a corpus; search it; save and load it.

    Args:
        model: a SentenceTransformer, a model path/name, or ``None`` for the default
            all-MiniLM-L6-v2 (loaded when first needed).
        spec: compression spec string (see :mod:`embedkit.compression.spec`), e.g. ``"binary"``.
        backend: ``"flat"`` (exact over codes), ``"hnsw"`` or ``"ivf"``.
        rescore: oversampling factor for float16 rescoring (e.g. 4: fetch 4k candidates by code,
            rescore them with float16 vectors, keep k); ``None`` keeps no rescoring vectors.
        nlist: IVF list count (default about 4*sqrt(n)). hnsw_m: HNSW graph degree.

    Example:
        >>> from embedkit import EmbeddingIndex
        >>> index = EmbeddingIndex.build(["a cat sat", "stock prices fell"], spec="binary", rescore=4)
        >>> index.search("kitten", k=1)[0].text
        'a cat sat'
        >>> index.save("my_index"); index = EmbeddingIndex.load("my_index")
    """

    def __init__(self, model=None, spec: str = "float", *, backend: str = "flat", rescore: int | None = None,
                 nlist: int | None = None, hnsw_m: int = 32):
        self.spec = spec
        self.backend = backend
        self.rescore = int(rescore) if rescore else None
        if self.rescore is not None and self.rescore < 1:
            raise EmbedkitError(f"rescore oversampling factor must be >= 1, got {rescore}")
        self.nlist = nlist
        self.hnsw_m = hnsw_m
        self.compression: CompressionPipeline = quantizer_from_spec(spec)
        from embedkit.compression.base import _check_backend

        _check_backend(backend)
        self._model = None
        self.model_source: str | None = None
        self.model_fingerprint: str | None = None
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self._set_model(model)
        elif model is not None:
            self.model_source = str(model)
        self.dim: int | None = None
        self._code_index = None
        self._docs = DocStore()
        self._keys = np.zeros(0, dtype=np.int64)
        self._rescore_vecs: np.ndarray | None = None
        self.build_seconds: float | None = None

    # -- model ----------------------------------------------------------------------------------
    def _set_model(self, model) -> None:
        from embedkit.models.loading import model_description, model_fingerprint

        self._model = model
        self.model_fingerprint = model_fingerprint(model)
        self.model_source = model_description(model)

    @property
    def model(self):
        """The encoder (loaded on first use from the recorded source)."""
        if self._model is None:
            from embedkit.models.loading import load_encoder, model_fingerprint

            model = load_encoder(self.model_source)
            fp = model_fingerprint(model)
            if self.model_fingerprint is not None and fp != self.model_fingerprint:
                raise ModelMismatchError(
                    f"the model at {self.model_source!r} (fingerprint {fp}) is not the one this index was built "
                    f"with ({self.model_fingerprint}); pass the original model, or force=True to query anyway"
                )
            self._model = model
            self.model_fingerprint = fp
        return self._model

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def build(cls, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict | None] | None = None,
              *, model=None, spec: str = "float", backend: str = "flat", rescore: int | None = None,
              embeddings: np.ndarray | None = None, nlist: int | None = None, hnsw_m: int = 32,
              batch_size: int = 64, show_progress: bool = True, cache=None) -> "EmbeddingIndex":
        """Encode ``texts`` (through the embedding cache), fit the compression, index everything."""
        t0 = time.perf_counter()
        index = cls(model, spec, backend=backend, rescore=rescore, nlist=nlist, hnsw_m=hnsw_m)
        index.add(texts, ids, metadata, embeddings=embeddings, batch_size=batch_size, show_progress=show_progress, cache=cache)
        index.build_seconds = time.perf_counter() - t0
        return index

    def __len__(self) -> int:
        return len(self._keys)

    def _validate_docs(self, texts, ids, metadata) -> tuple[list[str], list[str], list]:
        if isinstance(texts, str):
            raise EmbedkitError("expected a list of documents, got a single string")
        texts = list(texts)
        if not texts:
            raise EmbedkitError("the corpus is empty: give at least one document")
        if ids is None:
            start = self._docs.next_key()
            ids = [str(start + i) for i in range(len(texts))]
        ids = [str(i) for i in ids]
        if len(ids) != len(texts):
            raise EmbedkitError(f"got {len(ids)} ids for {len(texts)} documents")
        for i, (did, t) in enumerate(zip(ids, texts)):
            if not isinstance(t, str):
                raise EmbedkitError(f"document {i} (id {did!r}) is {type(t).__name__}, expected text")
            if not t.strip():
                raise EmbedkitError(f"document {i} (id {did!r}) is empty or whitespace-only")
            if not did.strip():
                raise EmbedkitError(f"document {i} has an empty id")
        dupes = [d for d, c in collections.Counter(ids).items() if c > 1]
        if dupes:
            raise EmbedkitError(f"duplicate document ids: {', '.join(map(repr, dupes[:5]))}")
        clash = self._docs.existing_ids(ids)
        if clash:
            raise EmbedkitError(f"document ids already in the index: {', '.join(map(repr, clash[:5]))}")
        if metadata is None:
            metadata = [None] * len(texts)
        metadata = list(metadata)
        if len(metadata) != len(texts):
            raise EmbedkitError(f"got {len(metadata)} metadata entries for {len(texts)} documents")
        for i, m in enumerate(metadata):
            if m is not None and not isinstance(m, dict):
                raise EmbedkitError(f"metadata of document {i} must be a dict or None, got {type(m).__name__}")
        return texts, ids, metadata

    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict | None] | None = None,
            *, embeddings: np.ndarray | None = None, batch_size: int = 64, show_progress: bool = False, cache=None) -> None:
        """Add documents (encoded with the index's model unless ``embeddings`` are given).

        The first call fits the compression on these documents' embeddings.

        Raises:
            EmbedkitError: empty corpus, empty/whitespace document, duplicate or existing id,
                embeddings of the wrong shape or with NaN/inf.
        """
        texts, ids, metadata = self._validate_docs(texts, ids, metadata)
        if embeddings is None:
            from embedkit.cache import encode_cached

            X = encode_cached(self.model, texts, batch_size=batch_size, show_progress=show_progress, cache=cache, desc="encoding corpus")
        else:
            X = check_matrix(embeddings, self.dim, "document embeddings")
            if len(X) != len(texts):
                raise EmbedkitError(f"got {len(X)} embeddings for {len(texts)} documents")
        X = l2_normalize(check_matrix(X, self.dim, "document embeddings"))
        if self._code_index is None:
            self.dim = X.shape[1]
            self.compression.fit(X)
            self._code_index = self.compression.new_index(self.backend, nlist=self.nlist, hnsw_m=self.hnsw_m, train_X=X)
        keys = np.arange(self._docs.next_key(), self._docs.next_key() + len(texts), dtype=np.int64)
        self._code_index.add(self.compression.transform(X))
        self._docs.add(keys.tolist(), ids, texts, metadata)
        self._keys = np.concatenate([self._keys, keys])
        if self.rescore:
            f16 = X.astype(np.float16)
            self._rescore_vecs = f16 if self._rescore_vecs is None else np.concatenate([np.asarray(self._rescore_vecs), f16])

    def remove(self, ids: Sequence[str]) -> None:
        """Remove documents by id; they never come back in results, and are gone from disk after save.

        Raises:
            EmbedkitError: an id that is not in the index.
        """
        if isinstance(ids, str):
            ids = [ids]
        ids = [str(i) for i in ids]
        found = self._docs.keys_of(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise EmbedkitError(f"unknown document ids: {', '.join(map(repr, missing[:5]))}")
        keys = np.array(sorted(set(found.values())), dtype=np.int64)
        rows = np.searchsorted(self._keys, keys)
        self._code_index.remove(rows)
        self._keys = np.delete(self._keys, rows)
        if self._rescore_vecs is not None:
            self._rescore_vecs = np.delete(np.asarray(self._rescore_vecs), rows, axis=0)
        self._docs.delete_keys(keys.tolist())

    # -- search ---------------------------------------------------------------------------------
    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise EmbedkitError(f"query {i} is empty; give some text to search for")
        return np.asarray(self.model.encode(list(queries), convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)

    def search_embeddings(self, Q, k: int = 10, *, rescore: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search with query embeddings. Returns (row positions, scores), each ``(nq, k)``; -1 pads.

        Raises:
            EmbedkitError: wrong dimension, NaN/inf, k < 1, empty index.
        """
        if self._code_index is None or len(self) == 0:
            raise EmbedkitError("the index is empty: add documents before searching")
        if int(k) < 1:
            raise EmbedkitError(f"k must be >= 1, got {k}")
        Q = l2_normalize(check_matrix(Q, self.dim, "query embeddings"))
        use_rescore = self._rescore_vecs is not None and rescore is not False
        kk = min(len(self), int(k) * (self.rescore if use_rescore else 1))
        scores, rows = self._code_index.search(self.compression.transform(Q), kk)
        if use_rescore:
            vecs = self._rescore_vecs
            out_rows = np.full((len(Q), kk), -1, dtype=np.int64)
            out_scores = np.full((len(Q), kk), -np.inf, dtype=np.float32)
            for qi in range(len(Q)):
                valid = rows[qi][rows[qi] >= 0]
                s = np.asarray(vecs[np.sort(valid)], dtype=np.float32) @ Q[qi]
                valid = np.sort(valid)
                order = np.argsort(-s, kind="stable")
                out_rows[qi, : len(valid)] = valid[order]
                out_scores[qi, : len(valid)] = s[order]
            rows, scores = out_rows, out_scores
        return rows[:, :k], scores[:, :k]

    def search_ids(self, Q, k: int = 10, *, rescore: bool | None = None) -> tuple[list[list[str]], np.ndarray]:
        """Like :meth:`search_embeddings` but returns document ids (no text lookup)."""
        rows, scores = self.search_embeddings(Q, k, rescore=rescore)
        flat = np.unique(rows[rows >= 0])
        key_to_id = self._docs.ids_for_keys(self._keys[flat].tolist())
        ids = [[key_to_id[int(self._keys[r])] for r in row if r >= 0] for row in rows]
        return ids, scores

    def search(self, query, k: int = 10, *, rescore: bool | None = None):
        """Search with a query string (returns ``list[Hit]``), a list of strings or an embedding
        matrix (returns one ``list[Hit]`` per query)."""
        single = isinstance(query, str)
        if single or (isinstance(query, (list, tuple)) and query and isinstance(query[0], str)):
            Q = self.encode_queries([query] if single else list(query))
        elif isinstance(query, (list, tuple)) and not query:
            raise EmbedkitError("no queries given")
        else:
            Q = query
        rows, scores = self.search_embeddings(Q, k, rescore=rescore)
        docs = self._docs.get(self._keys[np.unique(rows[rows >= 0])].tolist())
        results = []
        for row, sc in zip(rows, scores):
            hits = []
            for r, s in zip(row, sc):
                if r < 0:
                    continue
                did, text, meta = docs[int(self._keys[r])]
                hits.append(Hit(did, float(s), text, meta))
            results.append(hits)
        return results[0] if single else results

    # -- stats ----------------------------------------------------------------------------------
    @property
    def bytes_per_vector(self) -> int:
        """Bytes per document in the FAISS codes (without rescoring vectors)."""
        return int(self.compression.code_size)

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index folder atomically (temporary folder + rename)."""
        if self._code_index is None:
            raise EmbedkitError("cannot save an empty index: add documents first")
        path = Path(path)
        with atomic_directory(path) as tmp:
            self.compression.save(tmp, "quantizer")
            (tmp / "index.faiss").write_bytes(self._code_index.to_bytes())
            if self._rescore_vecs is not None:
                atomic_save_npy(tmp / "rescore.f16.npy", np.asarray(self._rescore_vecs, dtype=np.float16))
            self._docs.save(tmp / "docs.sqlite")
            files = {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size} for n in _DATA_FILES if (tmp / n).exists()}
            manifest = {
                "format": FORMAT,
                "model": {"source": self.model_source, "fingerprint": self.model_fingerprint},
                "spec": self.compression.spec,
                "backend": self.backend,
                "nlist": self.nlist,
                "hnsw_m": self.hnsw_m,
                "dim": self.dim,
                "code_size": self.bytes_per_vector,
                "count": len(self),
                "metric": "cosine",
                "rescore": self.rescore,
                "build_seconds": self.build_seconds,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files,
            }
            manifest["manifest_sha256"] = _manifest_digest(manifest)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return path

    @staticmethod
    def read_manifest(path: str | os.PathLike, *, verify: bool = True) -> dict:
        """Read and check ``manifest.json`` (format, own checksum, and with ``verify`` the files)."""
        path = Path(path)
        mpath = path / "manifest.json"
        if not path.is_dir():
            raise IndexFormatError(f"{path}: no index folder there")
        if not mpath.exists():
            raise IndexFormatError(f"{path}: not an embedkit index (no manifest.json)")
        try:
            manifest = json.loads(mpath.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{mpath}: manifest is not valid JSON ({e})") from e
        if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith("embedkit.index/"):
            raise IndexFormatError(f"{path}: not an embedkit index (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
        if manifest["format"] != FORMAT:
            raise IndexFormatError(f"{path}: index format {manifest['format']} is not supported by this embedkit ({FORMAT}); rebuild it")
        if manifest.get("manifest_sha256") != _manifest_digest(manifest):
            raise IndexFormatError(f"{mpath}: manifest was modified after the index was saved (checksum mismatch); rebuild the index")
        if verify:
            for name, info in manifest["files"].items():
                fp = path / name
                if not fp.exists():
                    raise IndexFormatError(f"{path}: {name} is missing; the index is incomplete, rebuild it")
                if fp.stat().st_size != info["bytes"] or sha256_file(fp) != info["sha256"]:
                    raise IndexFormatError(f"{path}: {name} is corrupt or truncated (checksum mismatch); rebuild the index")
        return manifest

    @classmethod
    def load(cls, path: str | os.PathLike, model=None, *, force: bool = False, verify: bool = True, mmap: bool = True) -> "EmbeddingIndex":
        """Load a saved index, verifying format, checksums and the model.

        Args:
            model: the encoder to query with (object, path or name); ``None`` loads the one
                recorded in the manifest when first needed.
            force: query with a model whose fingerprint differs from the index's.
            verify: check every file's sha256 (reads the whole index once).
            mmap: memory-map the rescoring vectors instead of reading them.

        Raises:
            IndexFormatError: missing, foreign, edited, truncated or corrupt index.
            ModelMismatchError: ``model`` is not the model the index was built with.
        """
        path = Path(path)
        manifest = cls.read_manifest(path, verify=verify)
        index = cls(None, manifest["spec"], backend=manifest["backend"], rescore=manifest.get("rescore"),
                    nlist=manifest.get("nlist"), hnsw_m=manifest.get("hnsw_m", 32))
        index.model_source = manifest["model"]["source"]
        index.model_fingerprint = manifest["model"]["fingerprint"]
        index.dim = manifest["dim"]
        index.build_seconds = manifest.get("build_seconds")
        try:
            index.compression = CompressionPipeline.load(path, "quantizer")
            index._code_index = index.compression.index_from_bytes((path / "index.faiss").read_bytes(), index.backend)
        except (RuntimeError, EmbedkitError, KeyError, ValueError) as e:
            raise IndexFormatError(f"{path}: cannot read the index ({str(e).splitlines()[0][:200]}); rebuild it") from e
        index._docs = DocStore.load(path / "docs.sqlite")
        index._keys = np.asarray(index._docs.keys(), dtype=np.int64)
        if (path / "rescore.f16.npy").exists():
            try:
                index._rescore_vecs = np.load(path / "rescore.f16.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            except ValueError as e:
                raise IndexFormatError(f"{path}: rescore.f16.npy is unreadable ({e})") from e
        n = manifest["count"]
        counts = {"manifest": n, "faiss": index._code_index.ntotal, "docs": len(index._keys)}
        if index._rescore_vecs is not None:
            counts["rescore"] = len(index._rescore_vecs)
        if len(set(counts.values())) != 1:
            raise IndexFormatError(f"{path}: inconsistent document counts {counts}; rebuild the index")
        if model is not None:
            index._check_model(model, force)
        return index

    def _check_model(self, model, force: bool) -> None:
        from embedkit.models.loading import load_encoder, model_fingerprint

        if isinstance(model, (str, os.PathLike)):
            model = load_encoder(model)
        fp = model_fingerprint(model)
        if fp != self.model_fingerprint and not force:
            raise ModelMismatchError(
                f"this index was built with model {self.model_source!r} (fingerprint {self.model_fingerprint}); "
                f"the given model has fingerprint {fp}. Use the original model, or force=True (--force) to query anyway"
            )
        self._model = model


def directory_size(path: str | os.PathLike, *, exclude: tuple[str, ...] = ()) -> int:
    """Total bytes of the files in ``path`` (not following links), minus the names in ``exclude``."""
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file() and p.name not in exclude)
