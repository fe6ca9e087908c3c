"""Lbl2TransformerVec: Lbl2Vec on sentence-transformer embeddings (no training).

Documents are split into chunks of at most ``max_seq_length / 2`` words at sentence boundaries
(:func:`split_chunks`) and the chunk embeddings averaged, as the reference does; keywords are
embedded one by one by the same encoder and averaged. All encodings go through
:func:`embedkit.cache.encode_cached`, so no text is encoded twice. The rest of the procedure is
:class:`embedkit.topics.base.KeywordTopics`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import numpy as np

from embedkit.errors import DataFormatError, EmbedkitError, ModelMismatchError
from embedkit.topics.base import KeywordTopics, check_documents, read_manifest

logger = logging.getLogger(__name__)

__all__ = ["Lbl2TransformerVec", "split_chunks"]


def split_chunks(text: str, max_words: int) -> list[str]:
    """Group sentences into chunks of fewer than ``max_words`` words (a longer sentence is cut).

    Example:
        >>> split_chunks("One two three. Four five six seven. Eight.", 6)
        ['One two three.', 'Four five six seven. Eight.']
    """
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]
    chunks: list[str] = []
    current: list[str] = []
    for sentence in sentences:
        words = sentence.split()
        while len(words) >= max_words:  # a sentence longer than a chunk becomes chunks of its own
            if current:
                chunks.append(" ".join(current))
                current = []
            chunks.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if not words:
            continue
        if current and len(current) + len(words) >= max_words:
            chunks.append(" ".join(current))
            current = []
        current.extend(words)
    if current:
        chunks.append(" ".join(current))
    return chunks or [text.strip()]


class Lbl2TransformerVec(KeywordTopics):
    """Lbl2Vec on sentence-transformer embeddings (no training: the encoder is used as is).

    Args:
        keywords, label_names, display_names: as for :class:`~embedkit.topics.Lbl2Vec`; keywords are
            embedded as written.
        model: ``None`` (the default all-MiniLM-L6-v2), a ``load_encoder`` name or folder, or a
            loaded SentenceTransformer.
        similarity_threshold, similarity_threshold_offset, min_num_docs, max_num_docs,
        clean_outliers, label_docs_from_extra: as for :class:`~embedkit.topics.Lbl2Vec`.
        max_words_per_chunk: documents are cut at sentence boundaries into chunks of fewer words
            than this and the chunk embeddings averaged; ``None``: half the encoder's
            ``max_seq_length`` (the reference's rule).
        batch_size: encoding batch size.
        cache: passed to :func:`embedkit.cache.encode_cached` (``False`` bypasses the cache).
        show_progress: show an encoding progress bar.

    Attributes:
        as for :class:`~embedkit.topics.Lbl2Vec`, with ``encoder_`` (the SentenceTransformer) instead of ``doc2vec_``.
    """

    _kind = "transformer"

    def __init__(
        self,
        keywords,
        label_names: Sequence[str] | None = None,
        *,
        display_names: Sequence[str] | None = None,
        model=None,
        similarity_threshold: float | None = None,
        similarity_threshold_offset: float = 0.0,
        min_num_docs: int | str = "auto",
        max_num_docs: int | None = None,
        clean_outliers: bool = False,
        label_docs_from_extra: bool = True,
        max_words_per_chunk: int | None = None,
        batch_size: int = 32,
        cache=None,
        show_progress: bool = False,
    ):
        self.keywords = keywords
        self.label_names = label_names
        self.display_names = display_names
        self.model = model
        self.similarity_threshold = similarity_threshold
        self.similarity_threshold_offset = similarity_threshold_offset
        self.min_num_docs = min_num_docs
        self.max_num_docs = max_num_docs
        self.clean_outliers = clean_outliers
        self.label_docs_from_extra = label_docs_from_extra
        self.max_words_per_chunk = max_words_per_chunk
        self.batch_size = batch_size
        self.cache = cache
        self.show_progress = show_progress

    unknown_keywords = "ignore"  # every keyword has an embedding; kept for the shared validation

    def _encoder(self):
        enc = getattr(self, "encoder_", None)
        if enc is None:
            if self.model is None or isinstance(self.model, (str, os.PathLike)):
                from embedkit.models.loading import load_encoder

                enc = load_encoder(self.model)
            else:
                enc = self.model
            self.encoder_ = enc
        return enc

    def _chunk_words(self) -> int:
        if self.max_words_per_chunk is not None:
            if int(self.max_words_per_chunk) < 1:
                raise EmbedkitError(f"max_words_per_chunk must be >= 1, got {self.max_words_per_chunk}")
            return int(self.max_words_per_chunk)
        return max(1, int((getattr(self._encoder(), "max_seq_length", None) or 256) * 0.5))

    def _embed(self, texts: list[str], desc: str = "encoding") -> np.ndarray:
        from embedkit.cache import encode_cached

        max_words = self._chunk_words()
        chunks, owner = [], []
        for i, t in enumerate(texts):
            parts = split_chunks(t, max_words)
            chunks.extend(parts)
            owner.extend([i] * len(parts))
        vecs = encode_cached(self._encoder(), chunks, batch_size=int(self.batch_size),
                             show_progress=bool(self.show_progress), cache=self.cache, desc=desc)
        owner = np.asarray(owner)
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        sums = np.add.reduceat(vecs.astype(np.float64), starts, axis=0)
        counts = np.diff(np.r_[starts, len(owner)])[:, None]
        return (sums / counts).astype(np.float32)

    def fit(self, documents: Sequence[str], extra_documents: Sequence[str] | None = None) -> Lbl2TransformerVec:
        """Embed ``documents`` (+ ``extra_documents``) and keywords, then build the label vectors."""
        self._resolve_keywords()
        self._validate_selection_params()
        docs = check_documents(documents)
        extra = check_documents(extra_documents or [], "extra document", allow_empty_list=True)
        self.doc_vectors_ = self._embed(docs, "documents")
        pool = self.doc_vectors_
        if extra and self.label_docs_from_extra:
            pool = np.concatenate([pool, self._embed(extra, "extra documents")])
        self.n_candidates_ = len(pool)
        self.documents_ = docs
        self.keyword_vectors_ = self._keyword_centroids(self.keywords_)
        self._fit_labels(pool)
        return self

    def _keyword_centroids(self, keywords: list[list[str]]) -> np.ndarray:
        flat = [k for kws in keywords for k in kws]
        vecs = self._embed(flat, "keywords")
        out, s = [], 0
        for kws in keywords:
            out.append(vecs[s : s + len(kws)].mean(axis=0))
            s += len(kws)
        self.keywords_used_ = [list(k) for k in keywords]
        self.unknown_keywords_ = {}
        return np.stack(out).astype(np.float32)

    def _embed_new(self, documents: list[str]) -> np.ndarray:
        return self._embed(documents, "documents")

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the model to folder ``path`` (same rules as :meth:`embedkit.topics.Lbl2Vec.save`).

        Layout: ``lbl2vec.json`` (parameters, labels, keywords, the encoder's source path and weight
        fingerprint), ``vectors.npz`` and ``documents.json``. The encoder itself is not copied:
        :meth:`load` loads it again from its source (or takes ``model=``) and refuses one with
        other weights."""
        self._check_fitted()
        from embedkit.models.loading import model_description, model_fingerprint

        enc = self._encoder()
        params = {k: v for k, v in self.get_params().items()
                  if k not in ("keywords", "label_names", "display_names", "model", "cache", "show_progress")}
        if self.model is None:
            source = None  # the default model: load_encoder(None) finds it wherever it is installed
        elif isinstance(self.model, (str, os.PathLike)):
            source = str(self.model)
        else:
            source = model_description(enc)
        extra = {"encoder": {"source": source,
                             "fingerprint": model_fingerprint(enc), "chunk_words": self._chunk_words()}}
        self._write_folder(path, overwrite, params, extra)

    @classmethod
    def load(cls, path: str | os.PathLike, *, model=None, force: bool = False) -> Lbl2TransformerVec:
        """Load a folder written by :meth:`save`; ``model`` overrides the stored encoder source.

        Raises:
            ModelMismatchError: the encoder's weights differ from the ones the model was fitted
                with (``force=True`` accepts it).
        """
        from embedkit.models.loading import load_encoder, model_fingerprint

        folder, manifest = read_manifest(path)
        if manifest.get("kind") != cls._kind:
            raise DataFormatError(f"{folder}: holds a {manifest.get('kind')!r} model; use load_lbl2vec()")
        info = manifest["encoder"]
        enc = model if model is not None and not isinstance(model, (str, os.PathLike)) else load_encoder(
            model if model is not None else info["source"])
        if not force and model_fingerprint(enc) != info["fingerprint"]:
            raise ModelMismatchError(
                f"{folder}: fitted with encoder {info['source']!r} (fingerprint {info['fingerprint']}), "
                f"got other weights ({model_fingerprint(enc)}); pass the same model, or force=True"
            )
        params = dict(manifest["params"])
        self = cls(manifest["keywords"], manifest["label_names"], display_names=manifest.get("display_names"),
                   model=info["source"], **params)
        self.encoder_ = enc
        self._load_common(folder, manifest)
        return self
