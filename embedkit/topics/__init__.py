"""Topics defined by keywords, without labelled data: Lbl2Vec and Lbl2TransformerVec.

Layout: :mod:`~embedkit.topics.base` (shared procedure, collapse check, folder format),
:mod:`~embedkit.topics.load` (loading a saved folder of either kind),
:mod:`~embedkit.topics.doc2vec` (:class:`Lbl2Vec`), :mod:`~embedkit.topics.transformer`
(:class:`Lbl2TransformerVec`), :mod:`~embedkit.topics.scoring` (:func:`score_labels`);
:mod:`~embedkit.topics.lbl2vec` re-exports all of them. Keyword files:
:func:`embedkit.data.read_keywords` (re-exported here).
"""

from __future__ import annotations

from embedkit.data.keywords import KeywordFile, read_keywords
from embedkit.topics.base import KeywordTopics, read_manifest
from embedkit.topics.doc2vec import Lbl2Vec, UnknownKeywordWarning, simple_tokenize
from embedkit.topics.load import load_lbl2vec, model_kind
from embedkit.topics.scoring import score_labels
from embedkit.topics.transformer import Lbl2TransformerVec, split_chunks

__all__ = [
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
