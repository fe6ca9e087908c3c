"""Lbl2Vec and Lbl2TransformerVec: classify and retrieve documents for topics described by keywords.

Lbl2Vec (Schopf, Braun & Matthes, WEBIST 2021, arXiv:2210.06023) needs no labelled documents: a
user names each topic with a few keywords, and

1. documents and words are embedded (Doc2Vec in :class:`Lbl2Vec`, a sentence-transformer in
   :class:`Lbl2TransformerVec`);
2. per label, the keywords are averaged into a *keyword centroid*;
3. the documents most similar (cosine) to that centroid are selected: those above
   ``similarity_threshold`` (default: the best score minus ``similarity_threshold_offset``), and
   at least ``min_num_docs`` of them, at most ``max_num_docs``;
4. optionally the selection is cleaned of outliers with scikit-learn's LocalOutlierFactor
   (``n_neighbors = min(20, n - 1)``, inliers kept);
5. the label vector is the mean of the selected document vectors; labels built from nearly the
   same documents are refused (:class:`~embedkit.errors.LabelCollapseError`);
6. every document is scored against every label vector by cosine: a ranking per label
   (retrieval) and the arg-max label (classification).

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
* collapsed labels are an error (the reference returns them silently);
* save/load never pickles: see :meth:`Lbl2Vec.save`.

Module layout: :mod:`embedkit.topics.base` (the shared procedure and the folder format),
:mod:`embedkit.topics.doc2vec` (:class:`Lbl2Vec`), :mod:`embedkit.topics.transformer`
(:class:`Lbl2TransformerVec`), :mod:`embedkit.topics.scoring` (:func:`score_labels`). This module
re-exports them; keyword files are read by :func:`embedkit.data.read_keywords`.
"""

from __future__ import annotations

from embedkit.data.keywords import KeywordFile, read_keywords
from embedkit.topics.base import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    KeywordTopics,
    cosine,
    read_manifest,
)
from embedkit.topics.doc2vec import Lbl2Vec, UnknownKeywordWarning, simple_tokenize
from embedkit.topics.load import load_lbl2vec, model_kind
from embedkit.topics.scoring import score_labels
from embedkit.topics.transformer import Lbl2TransformerVec, split_chunks

# old private names, kept for callers written before the split
_KeywordTopics = KeywordTopics
_read_manifest = read_manifest
_cosine = cosine
_split_chunks = split_chunks

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "KeywordFile",
    "KeywordTopics",
    "Lbl2TransformerVec",
    "Lbl2Vec",
    "UnknownKeywordWarning",
    "load_lbl2vec",
    "model_kind",
    "read_keywords",
    "read_manifest",
    "score_labels",
    "simple_tokenize",
    "split_chunks",
]
