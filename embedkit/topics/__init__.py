"""Topics defined by keywords, without labelled data: Lbl2Vec and Lbl2TransformerVec."""

from __future__ import annotations

from embedkit.topics.lbl2vec import (
    Lbl2TransformerVec,
    Lbl2Vec,
    UnknownKeywordWarning,
    load_lbl2vec,
    read_keywords,
    simple_tokenize,
)

__all__ = [
    "Lbl2TransformerVec",
    "Lbl2Vec",
    "UnknownKeywordWarning",
    "load_lbl2vec",
    "read_keywords",
    "simple_tokenize",
]
