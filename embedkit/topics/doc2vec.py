"""Lbl2Vec on Doc2Vec (Schopf, Braun & Matthes, WEBIST 2021, arXiv:2210.06023).

Documents and words are embedded *jointly*: gensim Doc2Vec PV-DBOW (``dm=0``) with simultaneous
skip-gram word training (``dbow_words=1``), hierarchical softmax and negative sampling both on
(``hs=1, negative=5``), as in the reference code ``sebischair/Lbl2Vec``. Per label, the keywords
the vocabulary knows are averaged into a *keyword centroid* (raw word vectors, as
``Doc2Vec.dv.most_similar(positive=[vectors])`` does in the reference); the rest of the procedure is
:class:`embedkit.topics.base.KeywordTopics`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from embedkit._io import atomic_save_npz, atomic_write_json, load_npz
from embedkit.errors import DataFormatError, EmbedkitError
from embedkit.topics.base import KeywordTopics, check_documents, read_manifest

logger = logging.getLogger(__name__)

__all__ = ["Lbl2Vec", "UnknownKeywordWarning", "simple_tokenize"]


class UnknownKeywordWarning(UserWarning):
    """A keyword is not in the Doc2Vec vocabulary and was dropped from its label."""


def simple_tokenize(text: str) -> list[str]:
    """The tokenizer of the reference examples: ``simple_preprocess(strip_tags(text), deacc=True,
    min_len=2, max_len=15)`` (lower case, accents stripped, no digits or punctuation)."""
    from gensim.parsing.preprocessing import strip_tags
    from gensim.utils import simple_preprocess

    return simple_preprocess(strip_tags(text), deacc=True, min_len=2, max_len=15)


_D2V_FIXED = {"dm": 0, "dbow_words": 1}


class Lbl2Vec(KeywordTopics):
    """Lbl2Vec: label vectors from keyword-selected Doc2Vec document vectors.

    Args:
        keywords: ``{label: [keywords]}``, a list of keyword lists (one per label), or a
            :class:`~embedkit.data.KeywordFile` from :func:`embedkit.data.read_keywords`.
        label_names: names for a list of keyword lists (default ``label_0``, ``label_1``, ...).
        display_names: a human-readable name per label (a keyword file's name column, e.g.
            ``Sports`` for label ``2``); :meth:`search` and :meth:`label_index` accept either.
            ``None``: the names a ``KeywordFile`` carries, else the labels themselves.
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
        min_num_docs: at least this many documents per label vector; ``"auto"`` (the default):
            :func:`~embedkit.topics.base.auto_min_num_docs` of the candidate documents and labels (the
            reference package's default, 1, makes a label vector from a single document and scores
            far lower; its examples use 100).
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
        display_names_: the display name of each label.
        keywords_used_: per label, the (tokenized) keywords found in the vocabulary.
        unknown_keywords_: ``{label: [keywords missing from the vocabulary]}``.
        keyword_vectors_: ``(n_labels, dim)`` keyword centroids.
        label_vectors_: ``(n_labels, dim)`` label vectors.
        doc_vectors_: ``(n_documents, dim)`` trained vectors of ``fit``'s ``documents``.
        label_doc_indices_, label_doc_scores_: per label, the documents averaged into its vector
            (indices into documents followed by extra documents) and their keyword similarity.
        documents_: the training texts (kept for :meth:`search` display and saved with the model).
        doc2vec_: the gensim ``Doc2Vec`` model.

    Raises (from ``fit``):
        LabelCollapseError: two labels were built from nearly the same documents (see
            :mod:`embedkit.topics.base`); the message names the setting to change.

    Example:
        .. code-block:: python

            texts = [...]  # a few hundred documents or more
            model = Lbl2Vec({"sport": ["football", "match"], "money": ["bank", "market"]}, min_count=2,
                            min_num_docs=5).fit(texts)
            model.predict(["the bank raised rates"])   # array of label names, one per document
            model.search("sport", k=3)                 # [(document index, cosine), ...], best first
    """

    _kind = "doc2vec"

    def __init__(
        self,
        keywords,
        label_names: Sequence[str] | None = None,
        *,
        display_names: Sequence[str] | None = None,
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
        min_num_docs: int | str = "auto",
        max_num_docs: int | None = None,
        clean_outliers: bool = False,
        unknown_keywords: str = "warn",
        label_docs_from_extra: bool = True,
        tokenizer: Callable[[str], list[str]] | None = None,
    ):
        self.keywords = keywords
        self.label_names = label_names
        self.display_names = display_names
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
        docs = check_documents(documents)
        extra = check_documents(extra_documents or [], "extra document", allow_empty_list=True)
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
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the model to folder ``path`` (written atomically); nothing is pickled.

        ``path`` must not exist, be an empty folder, or (with ``overwrite=True``) hold an earlier
        embedkit Lbl2Vec model; anything else is refused with
        :class:`~embedkit.errors.OutputExistsError` (:func:`embedkit._io.prepare_output`).

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
        params = {k: v for k, v in self.get_params().items()
                  if k not in ("keywords", "label_names", "display_names", "tokenizer")}
        extra = {
            "tokenizer": "custom" if self.tokenizer is not None else "simple_tokenize",
            "doc2vec": {**self._doc2vec_kwargs(), "effective_min_count": int(getattr(m, "effective_min_count", m.min_count)),
                        "gensim": _gensim_version()},
        }
        def write_doc2vec(tmp):
            atomic_save_npz(tmp / "doc2vec.npz", **weights)
            atomic_write_json(tmp / "vocab.json", words)

        self._write_folder(path, overwrite, params, extra, write_doc2vec)

    @classmethod
    def load(cls, path: str | os.PathLike, *, tokenizer: Callable[[str], list[str]] | None = None) -> Lbl2Vec:
        """Load a folder written by :meth:`save` (see there for the format)."""
        from gensim.models.doc2vec import Doc2Vec

        folder, manifest = read_manifest(path)
        if manifest.get("kind") != cls._kind:
            raise DataFormatError(f"{folder}: holds a {manifest.get('kind')!r} model; use load_lbl2vec()")
        if manifest.get("tokenizer") == "custom" and tokenizer is None:
            raise EmbedkitError(f"{folder}: the model was trained with a custom tokenizer; pass tokenizer=...")
        params = dict(manifest["params"])
        self = cls(manifest["keywords"], manifest["label_names"], display_names=manifest.get("display_names"),
                   tokenizer=tokenizer, **params)
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


