"""Lbl2Vec and Lbl2TransformerVec: classify and retrieve documents for topics described by keywords.

Lbl2Vec (Schopf, Braun & Matthes, WEBIST 2021, arXiv:2210.06023) needs no labelled documents: a
user names each topic with a few keywords, and

1. documents and words are embedded *jointly*: gensim Doc2Vec PV-DBOW (``dm=0``) with simultaneous
   skip-gram word training (``dbow_words=1``), hierarchical softmax and negative sampling both on
   (``hs=1, negative=5``), as in the reference code ``sebischair/Lbl2Vec``;
2. per label, the keywords the vocabulary knows are averaged into a *keyword centroid* (raw word
   vectors, as ``Doc2Vec.dv.most_similar(positive=[vectors])`` does in the reference);
3. the documents most similar (cosine) to that centroid are selected: those above
   ``similarity_threshold`` (default: the best score minus ``similarity_threshold_offset``), and
   at least ``min_num_docs`` of them, at most ``max_num_docs``;
4. optionally the selection is cleaned of outliers with scikit-learn's LocalOutlierFactor
   (``n_neighbors = min(20, n - 1)``, inliers kept);
5. the label vector is the mean of the selected document vectors;
6. every document is scored against every label vector by cosine: a ranking per label
   (retrieval) and the arg-max label (classification).

:class:`Lbl2TransformerVec` runs steps 2-6 on sentence-transformer embeddings instead: documents are
split into chunks of at most ``max_seq_length / 2`` words at sentence boundaries and the chunk
embeddings averaged (as the reference does), keywords are embedded one by one by the same encoder
and averaged. All encodings go through :func:`embedkit.cache.encode_cached`, so no text is encoded
twice.

Both classes follow scikit-learn conventions: ``__init__`` stores its arguments as given, ``fit``
learns attributes ending in ``_``, ``predict``/``decision_function`` work on new texts. Extra
unlabelled texts (``fit(documents, extra_documents=...)``) are added to Doc2Vec training and, like
in the reference where every trained document is a candidate, to the pool from which label vectors
are built (``label_docs_from_extra=False`` keeps them out of the pool).

Differences from the reference code, on purpose:

* ``max_num_docs`` keeps the *most similar* documents in both classes (the reference
  Lbl2TransformerVec truncates the unsorted document list instead);
* ``clean_outliers=True`` runs LOF in both classes (the reference Lbl2TransformerVec computes a
  centroid where LOF should be);
* a keyword unknown to the vocabulary warns (:class:`UnknownKeywordWarning`), raises, or is
  ignored (``unknown_keywords``); a label left without any known keyword is an error;
* save/load never pickles: see :meth:`Lbl2Vec.save`.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from embedkit._io import atomic_directory, atomic_save_npz, atomic_write_json, load_npz
from embedkit.errors import DataFormatError, EmbedkitError, ModelMismatchError, NotFittedError

FORMAT = "embedkit-lbl2vec"
FORMAT_VERSION = 1
MANIFEST = "lbl2vec.json"

__all__ = [
    "Lbl2Vec",
    "Lbl2TransformerVec",
    "UnknownKeywordWarning",
    "load_lbl2vec",
    "read_keywords",
    "simple_tokenize",
]


class UnknownKeywordWarning(UserWarning):
    """A keyword is not in the Doc2Vec vocabulary and was dropped from its label."""


# ---------------------------------------------------------------------------------------------
# inputs


def simple_tokenize(text: str) -> list[str]:
    """The tokenizer of the reference examples: ``simple_preprocess(strip_tags(text), deacc=True,
    min_len=2, max_len=15)`` (lower case, accents stripped, no digits or punctuation)."""
    from gensim.parsing.preprocessing import strip_tags
    from gensim.utils import simple_preprocess

    return simple_preprocess(strip_tags(text), deacc=True, min_len=2, max_len=15)


def read_keywords(path: str | os.PathLike) -> tuple[list[str], list[list[str]]]:
    """Read a keyword file: one label per line, ``label<TAB>kw1 kw2 ...``.

    A header line whose first field is ``label`` is skipped; lines starting with ``#`` and blank
    lines are ignored. With three or more fields (``label<TAB>name<TAB>keywords``, as in
    ``topics/ag_news/keywords_lbl2vec.tsv``) the first field is the label and the last the
    keywords. Keywords are separated by spaces or commas.

    Returns:
        (label names, keyword lists), in file order.

    Raises:
        DataFormatError: a line without a tab, an empty label or keyword list, a repeated label,
            or no labels at all (the message names file and line).
    """
    from embedkit.data.readers import _open_text

    name = Path(path).name
    labels: list[str] = []
    keywords: list[list[str]] = []
    with _open_text(path) as f:
        for i, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split("\t")
            if i == 1 and fields[0].strip().lower() == "label":
                continue
            if len(fields) < 2:
                raise DataFormatError(f"{name}:{i}: expected 'label<TAB>keyword keyword ...', found no tab")
            label = fields[0].strip()
            kws = [k for k in re.split(r"[\s,]+", fields[-1]) if k]
            if not label:
                raise DataFormatError(f"{name}:{i}: empty label")
            if not kws:
                raise DataFormatError(f"{name}:{i}: label {label!r} has no keywords")
            if label in labels:
                raise DataFormatError(f"{name}:{i}: label {label!r} appears twice")
            labels.append(label)
            keywords.append(kws)
    if not labels:
        raise DataFormatError(f"{name}: no labels found")
    return labels, keywords


def _normalise_keywords(keywords, label_names) -> tuple[list[str], list[list[str]]]:
    """Accept {label: [keywords]} or a list of keyword lists (+ optional label names)."""
    if isinstance(keywords, Mapping):
        if label_names is not None:
            raise EmbedkitError("give label names either as the keys of `keywords` or as `label_names`, not both")
        names = [str(k) for k in keywords]
        lists = [keywords[k] for k in keywords]
    else:
        if isinstance(keywords, str):
            raise EmbedkitError("keywords must be a list of keyword lists (one per label) or a {label: keywords} dict")
        lists = list(keywords)
        names = [str(n) for n in label_names] if label_names is not None else [f"label_{i}" for i in range(len(lists))]
        if len(names) != len(lists):
            raise EmbedkitError(f"{len(names)} label names for {len(lists)} keyword lists; give one name per list")
    if not lists:
        raise EmbedkitError("no labels: give at least one keyword list")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise EmbedkitError(f"label {dup!r} appears twice")
    out = []
    for name, kws in zip(names, lists):
        if isinstance(kws, str):
            kws = kws.split()
        kws = [str(k).strip() for k in kws if str(k).strip()]
        if not kws:
            raise EmbedkitError(f"label {name!r} has an empty keyword list; give it at least one keyword")
        out.append(kws)
    return names, out


def _check_documents(documents, what: str = "document", allow_empty_list: bool = False) -> list[str]:
    from embedkit.cache import _check_texts

    _check_texts(documents, what)
    docs = list(documents)
    if not docs and not allow_empty_list:
        raise EmbedkitError(f"no {what}s given")
    return docs


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _cosine(docs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _unit(docs) @ _unit(labels).T


def _split_chunks(text: str, max_words: int) -> list[str]:
    """Group sentences into chunks of fewer than ``max_words`` words (a longer sentence is cut)."""
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


# ---------------------------------------------------------------------------------------------
# the shared procedure


class _KeywordTopics:
    """Steps 2-6 of Lbl2Vec, shared by both classes; subclasses provide the vectors."""

    _kind = ""

    # -- subclass hooks
    def _keyword_centroids(self, keywords: list[list[str]]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _embed_new(self, documents: list[str]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # -- sklearn plumbing
    def get_params(self, deep: bool = True) -> dict:
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params):
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise EmbedkitError(f"unknown parameter {k!r} for {type(self).__name__}")
            setattr(self, k, v)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "label_vectors_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(documents) first")

    def _validate_selection_params(self) -> None:
        if self.min_num_docs is not None and int(self.min_num_docs) < 1:
            raise EmbedkitError(f"min_num_docs must be >= 1, got {self.min_num_docs}")
        if self.max_num_docs is not None:
            if int(self.max_num_docs) < 1:
                raise EmbedkitError(f"max_num_docs must be >= 1, got {self.max_num_docs}")
            if self.min_num_docs is not None and int(self.max_num_docs) < int(self.min_num_docs):
                raise EmbedkitError(f"max_num_docs ({self.max_num_docs}) is below min_num_docs ({self.min_num_docs})")
        if self.similarity_threshold is not None and not -1.0 <= float(self.similarity_threshold) <= 1.0:
            raise EmbedkitError(f"similarity_threshold must lie in [-1, 1], got {self.similarity_threshold}")
        if self.unknown_keywords not in ("warn", "error", "ignore"):
            raise EmbedkitError(f"unknown_keywords must be 'warn', 'error' or 'ignore', got {self.unknown_keywords!r}")

    # -- label vectors
    def _select(self, centroid: np.ndarray, pool_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the candidate documents for one label (best first)."""
        scores = pool_unit @ _unit(centroid)
        order = np.argsort(-scores, kind="stable")
        if self.max_num_docs is not None:
            order = order[: int(self.max_num_docs)]
        ranked = scores[order]
        threshold = (
            float(self.similarity_threshold) if self.similarity_threshold is not None
            else float(ranked[0]) - float(self.similarity_threshold_offset or 0.0)
        )
        keep = order[ranked > threshold]
        min_docs = int(self.min_num_docs or 1)
        if len(keep) < min_docs:
            keep = order[:min_docs]
        return keep, scores[keep]

    def _clean(self, vectors: np.ndarray) -> np.ndarray:
        """Local-outlier-factor mask of the inliers (all True when there are too few vectors)."""
        if len(vectors) < 3:
            return np.ones(len(vectors), dtype=bool)
        from sklearn.neighbors import LocalOutlierFactor

        lof = LocalOutlierFactor(n_neighbors=min(20, len(vectors) - 1))
        return lof.fit_predict(vectors) == 1

    def _fit_labels(self, pool: np.ndarray) -> None:
        centroids = self.keyword_vectors_
        pool_unit = _unit(pool)
        label_vectors, indices, scores = [], [], []
        for c in centroids:
            idx, sc = self._select(c, pool_unit)
            if self.clean_outliers:
                mask = self._clean(pool[idx])
                idx, sc = idx[mask], sc[mask]
            label_vectors.append(pool[idx].mean(axis=0))
            indices.append(idx.astype(np.int64))
            scores.append(sc.astype(np.float32))
        self.label_vectors_ = np.stack(label_vectors).astype(np.float32)
        self.label_doc_indices_ = indices
        self.label_doc_scores_ = scores

    def _resolve_keywords(self) -> None:
        self.label_names_, self.keywords_ = _normalise_keywords(self.keywords, self.label_names)

    # -- prediction
    def training_scores(self) -> np.ndarray:
        """Cosine similarity of every training document (``fit``'s ``documents``) to every label,
        shape ``(n_documents, n_labels)``, from the stored document vectors (no inference)."""
        self._check_fitted()
        return _cosine(self.doc_vectors_, self.label_vectors_)

    def decision_function(self, documents: Sequence[str]) -> np.ndarray:
        """Cosine similarity of new documents to every label, shape ``(n, n_labels)``."""
        self._check_fitted()
        docs = _check_documents(documents)
        return _cosine(self._embed_new(docs), self.label_vectors_)

    def predict(self, documents: Sequence[str] | None = None) -> np.ndarray:
        """The most similar label of each document (``None``: the training documents)."""
        scores = self.training_scores() if documents is None else self.decision_function(documents)
        return np.asarray(self.label_names_, dtype=object)[scores.argmax(axis=1)]

    def label_index(self, label: str) -> int:
        self._check_fitted()
        try:
            return self.label_names_.index(str(label))
        except ValueError:
            raise EmbedkitError(
                f"unknown label {label!r}; the model knows: {', '.join(map(repr, self.label_names_))}"
            ) from None

    def search(self, label: str, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` training documents most similar to ``label``: ``[(document index, cosine)]``."""
        j = self.label_index(label)
        if int(k) < 1:
            raise EmbedkitError(f"k must be >= 1, got {k}")
        scores = self.training_scores()[:, j]
        k = min(int(k), len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(i), float(scores[i])) for i in top]

    # -- persistence (shared part)
    def _common_manifest(self) -> dict:
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "kind": self._kind,
            "label_names": self.label_names_, "keywords": self.keywords_, "keywords_used": self.keywords_used_,
            "unknown_keywords": self.unknown_keywords_, "n_documents": int(len(self.doc_vectors_)),
            "n_candidates": int(self.n_candidates_),
        }

    def _save_common(self, tmp: Path, params: dict, extra: dict) -> None:
        offsets = np.cumsum([0] + [len(i) for i in self.label_doc_indices_]).astype(np.int64)
        atomic_save_npz(
            tmp / "vectors.npz",
            label_vectors=self.label_vectors_, keyword_vectors=self.keyword_vectors_, doc_vectors=self.doc_vectors_,
            label_doc_indices=np.concatenate(self.label_doc_indices_), label_doc_scores=np.concatenate(self.label_doc_scores_),
            label_doc_offsets=offsets,
        )
        if self.documents_ is not None:
            atomic_write_json(tmp / "documents.json", self.documents_)
        atomic_write_json(tmp / MANIFEST, {**self._common_manifest(), "params": params, **extra})

    def _load_common(self, folder: Path, manifest: dict) -> None:
        try:
            arrays = load_npz(folder / "vectors.npz")
            self.label_vectors_ = arrays["label_vectors"]
            self.keyword_vectors_ = arrays["keyword_vectors"]
            self.doc_vectors_ = arrays["doc_vectors"]
            off = arrays["label_doc_offsets"]
            self.label_doc_indices_ = [arrays["label_doc_indices"][a:b] for a, b in zip(off[:-1], off[1:])]
            self.label_doc_scores_ = [arrays["label_doc_scores"][a:b] for a, b in zip(off[:-1], off[1:])]
        except (OSError, KeyError, ValueError) as e:
            raise DataFormatError(f"{folder}: vectors.npz is missing or damaged ({e})") from e
        self.label_names_ = list(manifest["label_names"])
        self.keywords_ = [list(k) for k in manifest["keywords"]]
        self.keywords_used_ = [list(k) for k in manifest["keywords_used"]]
        self.unknown_keywords_ = dict(manifest["unknown_keywords"])
        self.n_candidates_ = int(manifest["n_candidates"])
        docs_path = folder / "documents.json"
        self.documents_ = json.loads(docs_path.read_text()) if docs_path.exists() else None
        if self.label_vectors_.shape[0] != len(self.label_names_):
            raise DataFormatError(f"{folder}: {self.label_vectors_.shape[0]} label vectors for {len(self.label_names_)} labels")


def _read_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    folder = Path(path)
    if not folder.is_dir():
        raise EmbedkitError(f"no Lbl2Vec model folder at {str(path)!r}")
    mp = folder / MANIFEST
    try:
        manifest = json.loads(mp.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{folder}: not an embedkit Lbl2Vec model ({MANIFEST} is missing)") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{mp}: not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT:
        raise DataFormatError(f"{mp}: format {manifest.get('format')!r} is not {FORMAT!r}")
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise DataFormatError(f"{mp}: format version {manifest.get('version')} is newer than this embedkit reads")
    return folder, manifest


def load_lbl2vec(path: str | os.PathLike, **kwargs):
    """Load a folder written by :meth:`Lbl2Vec.save` or :meth:`Lbl2TransformerVec.save`."""
    _, manifest = _read_manifest(path)
    cls = {"doc2vec": Lbl2Vec, "transformer": Lbl2TransformerVec}.get(manifest.get("kind"))
    if cls is None:
        raise DataFormatError(f"{path}: unknown model kind {manifest.get('kind')!r}")
    return cls.load(path, **kwargs)


# ---------------------------------------------------------------------------------------------
# Lbl2Vec on Doc2Vec


_D2V_FIXED = {"dm": 0, "dbow_words": 1}


class Lbl2Vec(_KeywordTopics):
    """Lbl2Vec: label vectors from keyword-selected Doc2Vec document vectors.

    Args:
        keywords: ``{label: [keywords]}``, or a list of keyword lists (one per label).
        label_names: names for a list of keyword lists (default ``label_0``, ``label_1``, ...).
        vector_size, window, min_count, sample, negative, hs, epochs, alpha, min_alpha: Doc2Vec
            hyper-parameters; defaults are the reference's (300, 15, 50, 1e-5, 5, 1, 10, 0.025,
            0.0001). PV-DBOW with word training (``dm=0, dbow_words=1``) is fixed. ``min_count=50``
            suits the reference's 120k-document corpora; lower it for small ones.
        workers: Doc2Vec threads (``None``: all cores, like the reference's ``-1``).
        seed: Doc2Vec seed; also reseeds inference per document, so ``decision_function`` gives
            the same vector for the same text every time (one worker would make training
            deterministic too).
        similarity_threshold: keep documents whose cosine to the keyword centroid exceeds this;
            ``None``: the best document's score minus ``similarity_threshold_offset``.
        similarity_threshold_offset: see above.
        min_num_docs: at least this many documents per label vector (the reference examples use 100).
        max_num_docs: at most this many (the most similar); ``None``: no cap.
        clean_outliers: drop LocalOutlierFactor outliers from each label's documents.
        unknown_keywords: a keyword outside the vocabulary ``"warn"`` (:class:`UnknownKeywordWarning`),
            ``"error"`` or ``"ignore"``; a label without any known keyword always raises.
        label_docs_from_extra: let ``extra_documents`` be picked for label vectors (as in the
            reference, where every trained document is a candidate).
        tokenizer: ``None`` for :func:`simple_tokenize` (the reference examples' preprocessing), or
            a callable ``str -> list[str]`` (then pass it again to :meth:`load`). Keywords go
            through the same tokenizer.

    Attributes:
        label_names_, keywords_: the labels and their keywords as given.
        keywords_used_: per label, the (tokenized) keywords found in the vocabulary.
        unknown_keywords_: ``{label: [keywords missing from the vocabulary]}``.
        keyword_vectors_: ``(n_labels, dim)`` keyword centroids.
        label_vectors_: ``(n_labels, dim)`` label vectors.
        doc_vectors_: ``(n_documents, dim)`` trained vectors of ``fit``'s ``documents``.
        label_doc_indices_, label_doc_scores_: per label, the documents averaged into its vector
            (indices into documents followed by extra documents) and their keyword similarity.
        documents_: the training texts (kept for :meth:`search` display and saved with the model).
        doc2vec_: the gensim ``Doc2Vec`` model.

    Example:
        >>> model = Lbl2Vec({"sport": ["football", "match"], "money": ["bank", "market"]}, min_count=2,
        ...                 min_num_docs=5).fit(texts)
        >>> model.predict(["the bank raised rates"])
        array(['money'], dtype=object)
        >>> model.search("sport", k=3)
        [(12, 0.81), (40, 0.79), (3, 0.77)]
    """

    _kind = "doc2vec"

    def __init__(
        self,
        keywords,
        label_names: Sequence[str] | None = None,
        *,
        vector_size: int = 300,
        window: int = 15,
        min_count: int = 50,
        sample: float = 1e-5,
        negative: int = 5,
        hs: int = 1,
        epochs: int = 10,
        alpha: float = 0.025,
        min_alpha: float = 0.0001,
        workers: int | None = None,
        seed: int = 0,
        similarity_threshold: float | None = None,
        similarity_threshold_offset: float = 0.0,
        min_num_docs: int = 1,
        max_num_docs: int | None = None,
        clean_outliers: bool = False,
        unknown_keywords: str = "warn",
        label_docs_from_extra: bool = True,
        tokenizer: Callable[[str], list[str]] | None = None,
    ):
        self.keywords = keywords
        self.label_names = label_names
        self.vector_size = vector_size
        self.window = window
        self.min_count = min_count
        self.sample = sample
        self.negative = negative
        self.hs = hs
        self.epochs = epochs
        self.alpha = alpha
        self.min_alpha = min_alpha
        self.workers = workers
        self.seed = seed
        self.similarity_threshold = similarity_threshold
        self.similarity_threshold_offset = similarity_threshold_offset
        self.min_num_docs = min_num_docs
        self.max_num_docs = max_num_docs
        self.clean_outliers = clean_outliers
        self.unknown_keywords = unknown_keywords
        self.label_docs_from_extra = label_docs_from_extra
        self.tokenizer = tokenizer

    def _tokenize(self, text: str) -> list[str]:
        return (self.tokenizer or simple_tokenize)(text)

    def _doc2vec_kwargs(self) -> dict:
        return dict(
            vector_size=int(self.vector_size), window=int(self.window), min_count=int(self.min_count),
            sample=float(self.sample), negative=int(self.negative), hs=int(self.hs), epochs=int(self.epochs),
            alpha=float(self.alpha), min_alpha=float(self.min_alpha), seed=int(self.seed), **_D2V_FIXED,
        )

    def fit(self, documents: Sequence[str], extra_documents: Sequence[str] | None = None) -> Lbl2Vec:
        """Train Doc2Vec on ``documents`` (+ ``extra_documents``), then the label vectors.

        Raises:
            EmbedkitError: an empty keyword list, an empty document, a label none of whose keywords
                is in the vocabulary, or (``unknown_keywords="error"``) any unknown keyword.
        """
        from gensim.models.doc2vec import Doc2Vec, TaggedDocument

        self._resolve_keywords()
        self._validate_selection_params()
        if int(self.hs) == 0 and int(self.negative) == 0:
            raise EmbedkitError("hs=0 and negative=0 leave Doc2Vec without an output layer; set one of them")
        docs = _check_documents(documents)
        extra = _check_documents(extra_documents or [], "extra document", allow_empty_list=True)
        tokens = [self._tokenize(t) for t in docs + extra]
        if not any(tokens):
            raise EmbedkitError("no document has any token after tokenization")
        workers = int(self.workers) if self.workers else (os.cpu_count() or 1)
        model = Doc2Vec(
            [TaggedDocument(w, [i]) for i, w in enumerate(tokens)], workers=workers, **self._doc2vec_kwargs()
        )
        if len(model.wv) == 0:
            raise EmbedkitError(f"the vocabulary is empty: no word occurs min_count={self.min_count} times; lower min_count")
        self.doc2vec_ = model
        self.n_candidates_ = len(docs) + (len(extra) if self.label_docs_from_extra else 0)
        pool = np.asarray(model.dv.vectors[: self.n_candidates_], dtype=np.float32)
        self.doc_vectors_ = pool[: len(docs)].copy()
        self.documents_ = docs
        self.keyword_vectors_ = self._keyword_centroids(self.keywords_)
        self._fit_labels(pool)
        return self

    def _keyword_centroids(self, keywords: list[list[str]]) -> np.ndarray:
        wv = self.doc2vec_.wv
        used, unknown, centroids = [], {}, []
        for name, kws in zip(self.label_names_, keywords):
            known, missing = [], []
            for kw in kws:
                toks = self._tokenize(kw)
                hits = [t for t in toks if t in wv.key_to_index]
                if not hits:
                    missing.append(kw)
                for t in hits:
                    if t not in known:
                        known.append(t)
            if missing:
                unknown[name] = missing
                msg = (f"label {name!r}: keyword(s) {', '.join(map(repr, missing))} not in the Doc2Vec vocabulary "
                       f"({len(wv)} words, min_count={self.min_count})")
                if self.unknown_keywords == "error":
                    raise EmbedkitError(msg + "; remove them, lower min_count or add text that uses them")
                if self.unknown_keywords == "warn":
                    warnings.warn(msg + "; they are ignored", UnknownKeywordWarning, stacklevel=4)
            if not known:
                raise EmbedkitError(
                    f"label {name!r}: none of its keywords ({', '.join(kws)}) is in the Doc2Vec vocabulary; "
                    "give other keywords, lower min_count or add text that uses them"
                )
            used.append(known)
            centroids.append(np.mean([wv[t] for t in known], axis=0))
        self.keywords_used_ = used
        self.unknown_keywords_ = unknown
        return np.stack(centroids).astype(np.float32)

    def _infer(self, tokens: list[str]) -> np.ndarray:
        model = self.doc2vec_
        model.random = np.random.RandomState(int(self.seed))  # same text -> same vector, call after call
        return model.infer_vector(tokens)

    def _embed_new(self, documents: list[str]) -> np.ndarray:
        vocab = self.doc2vec_.wv.key_to_index
        out = np.empty((len(documents), self.doc2vec_.vector_size), dtype=np.float32)
        oov = []
        for i, text in enumerate(documents):
            tokens = self._tokenize(text)
            if not any(t in vocab for t in tokens):
                oov.append(i)
            out[i] = self._infer(tokens)
        if oov:
            warnings.warn(
                f"{len(oov)} document(s) (first: {oov[0]}) have no word in the vocabulary; "
                "their scores are meaningless", UserWarning, stacklevel=3,
            )
        return out

    # -- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the model to folder ``path`` (replaced atomically); nothing is pickled.

        Layout: ``lbl2vec.json`` (parameters, labels, keywords), ``vectors.npz`` (label, keyword
        and document vectors, selected documents), ``documents.json`` (training texts), and for
        inference on new documents the Doc2Vec weights: ``doc2vec.npz`` (word vectors, the
        hierarchical-softmax ``syn1`` and negative-sampling ``syn1neg`` output weights, word
        counts) and ``vocab.json`` (the words in vocabulary order). :meth:`load` rebuilds the
        gensim model from these: the vocabulary is rebuilt from the counts in the stored order,
        which yields the same Huffman tree, sampling table and down-sampling thresholds, then the
        weights are copied in. Training-document vectors are not put back into the gensim model
        (they live in ``vectors.npz``), so it cannot be trained further.
        """
        self._check_fitted()
        if self.tokenizer is not None:
            warnings.warn("a custom tokenizer is not saved; pass it again to Lbl2Vec.load", UserWarning, stacklevel=2)
        m = self.doc2vec_
        words = list(m.wv.index_to_key)
        counts = np.asarray([m.wv.get_vecattr(w, "count") for w in words], dtype=np.int64)
        weights = {"word_vectors": m.wv.vectors, "word_counts": counts}
        if m.hs:
            weights["syn1"] = m.syn1
        if m.negative:
            weights["syn1neg"] = m.syn1neg
        params = {k: v for k, v in self.get_params().items() if k not in ("keywords", "label_names", "tokenizer")}
        extra = {
            "tokenizer": "custom" if self.tokenizer is not None else "simple_tokenize",
            "doc2vec": {**self._doc2vec_kwargs(), "effective_min_count": int(getattr(m, "effective_min_count", m.min_count)),
                        "gensim": _gensim_version()},
        }
        with atomic_directory(path) as tmp:
            atomic_save_npz(tmp / "doc2vec.npz", **weights)
            atomic_write_json(tmp / "vocab.json", words)
            self._save_common(tmp, params, extra)

    @classmethod
    def load(cls, path: str | os.PathLike, *, tokenizer: Callable[[str], list[str]] | None = None) -> Lbl2Vec:
        """Load a folder written by :meth:`save` (see there for the format)."""
        from gensim.models.doc2vec import Doc2Vec

        folder, manifest = _read_manifest(path)
        if manifest.get("kind") != cls._kind:
            raise DataFormatError(f"{folder}: holds a {manifest.get('kind')!r} model; use load_lbl2vec()")
        if manifest.get("tokenizer") == "custom" and tokenizer is None:
            raise EmbedkitError(f"{folder}: the model was trained with a custom tokenizer; pass tokenizer=...")
        params = dict(manifest["params"])
        self = cls(manifest["keywords"], manifest["label_names"], tokenizer=tokenizer, **params)
        self._load_common(folder, manifest)
        try:
            weights = load_npz(folder / "doc2vec.npz")
            words = json.loads((folder / "vocab.json").read_text())
        except (OSError, ValueError) as e:
            raise DataFormatError(f"{folder}: doc2vec.npz or vocab.json is missing or damaged ({e})") from e
        d2v = manifest["doc2vec"]
        kwargs = {k: d2v[k] for k in ("vector_size", "window", "sample", "negative", "hs", "epochs", "alpha",
                                      "min_alpha", "seed", "dm", "dbow_words")}
        model = Doc2Vec(min_count=int(d2v["effective_min_count"]), sorted_vocab=0, workers=1, **kwargs)
        counts = weights["word_counts"]
        if len(words) != len(counts) or weights["word_vectors"].shape != (len(words), int(d2v["vector_size"])):
            raise DataFormatError(f"{folder}: vocab.json and doc2vec.npz disagree in size")
        model.build_vocab_from_freq({w: int(c) for w, c in zip(words, counts)})
        if list(model.wv.index_to_key) != words:
            raise DataFormatError(f"{folder}: the rebuilt vocabulary differs from vocab.json")
        model.wv.vectors[:] = weights["word_vectors"]
        model.wv.norms = None
        if model.hs:
            model.syn1[:] = weights["syn1"]
        if model.negative:
            model.syn1neg[:] = weights["syn1neg"]
        self.doc2vec_ = model
        return self


def _gensim_version() -> str:
    import gensim

    return gensim.__version__


# ---------------------------------------------------------------------------------------------
# Lbl2TransformerVec on sentence-transformer embeddings


class Lbl2TransformerVec(_KeywordTopics):
    """Lbl2Vec on sentence-transformer embeddings (no training: the encoder is used as is).

    Args:
        keywords, label_names: as for :class:`Lbl2Vec`; keywords are embedded as written.
        model: ``None`` (the default all-MiniLM-L6-v2), a ``load_encoder`` name or folder, or a
            loaded SentenceTransformer.
        similarity_threshold, similarity_threshold_offset, min_num_docs, max_num_docs,
        clean_outliers, label_docs_from_extra: as for :class:`Lbl2Vec`.
        max_words_per_chunk: documents are cut at sentence boundaries into chunks of fewer words
            than this and the chunk embeddings averaged; ``None``: half the encoder's
            ``max_seq_length`` (the reference's rule).
        batch_size: encoding batch size.
        cache: passed to :func:`embedkit.cache.encode_cached` (``False`` bypasses the cache).
        show_progress: show an encoding progress bar.

    Attributes:
        as for :class:`Lbl2Vec`, with ``encoder_`` (the SentenceTransformer) instead of ``doc2vec_``.
    """

    _kind = "transformer"

    def __init__(
        self,
        keywords,
        label_names: Sequence[str] | None = None,
        *,
        model=None,
        similarity_threshold: float | None = None,
        similarity_threshold_offset: float = 0.0,
        min_num_docs: int = 1,
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
            parts = _split_chunks(t, max_words)
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
        docs = _check_documents(documents)
        extra = _check_documents(extra_documents or [], "extra document", allow_empty_list=True)
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

    def save(self, path: str | os.PathLike) -> None:
        """Write the model to folder ``path``: ``lbl2vec.json`` (parameters, labels, keywords, the
        encoder's source path and weight fingerprint), ``vectors.npz`` and ``documents.json``.
        The encoder itself is not copied: :meth:`load` loads it again from its source (or takes
        ``model=``) and refuses one with other weights."""
        self._check_fitted()
        from embedkit.models.loading import model_description, model_fingerprint

        enc = self._encoder()
        params = {k: v for k, v in self.get_params().items()
                  if k not in ("keywords", "label_names", "model", "cache", "show_progress")}
        if self.model is None:
            source = None  # the default model: load_encoder(None) finds it wherever it is installed
        elif isinstance(self.model, (str, os.PathLike)):
            source = str(self.model)
        else:
            source = model_description(enc)
        extra = {"encoder": {"source": source,
                             "fingerprint": model_fingerprint(enc), "chunk_words": self._chunk_words()}}
        with atomic_directory(path) as tmp:
            self._save_common(tmp, params, extra)

    @classmethod
    def load(cls, path: str | os.PathLike, *, model=None, force: bool = False) -> Lbl2TransformerVec:
        """Load a folder written by :meth:`save`; ``model`` overrides the stored encoder source.

        Raises:
            ModelMismatchError: the encoder's weights differ from the ones the model was fitted
                with (``force=True`` accepts it).
        """
        from embedkit.models.loading import load_encoder, model_fingerprint

        folder, manifest = _read_manifest(path)
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
        self = cls(manifest["keywords"], manifest["label_names"], model=info["source"], **params)
        self.encoder_ = enc
        self._load_common(folder, manifest)
        return self
