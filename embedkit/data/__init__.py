"""Input parsing: every file embedkit reads is parsed and validated here.

Readers report bad input in one line naming the file and line (:class:`~embedkit.errors.DataFormatError`):
STS TSV, labelled TSV, text lines, BEIR folders (corpus, queries, qrels), corpora in any of the
supported shapes, preference pairs and word2vec vectors. Every text file may be gzip-compressed.
:func:`check_texts` and :func:`cut_texts` guard what reaches a tokenizer.
"""

from embedkit.data.documents import ValidDocuments, validate_documents
from embedkit.data.files import iter_jsonl, iter_tsv_rows, open_text
from embedkit.data.keywords import KeywordFile, read_keywords
from embedkit.data.pairs import read_retrieval_pairs, read_text_pairs
from embedkit.data.preferences import PreferencePair, read_preference_pairs
from embedkit.data.readers import (
    BeirDataset,
    Corpus,
    StsDataset,
    iter_corpus,
    read_beir,
    read_corpus,
    read_labelled_tsv,
    read_qrels,
    read_queries,
    read_sts_tsv,
    read_text_lines,
)
from embedkit.data.texts import MAX_TEXT_CHARS, check_texts, cut_texts, is_blank
from embedkit.data.vectors import load_vectors

__all__ = [
    "read_retrieval_pairs",
    "read_text_pairs",
    "BeirDataset",
    "Corpus",
    "KeywordFile",
    "MAX_TEXT_CHARS",
    "PreferencePair",
    "StsDataset",
    "ValidDocuments",
    "check_texts",
    "cut_texts",
    "is_blank",
    "iter_corpus",
    "iter_jsonl",
    "iter_tsv_rows",
    "KeywordFile",
    "read_keywords",
    "load_vectors",
    "open_text",
    "read_beir",
    "read_corpus",
    "read_keywords",
    "read_labelled_tsv",
    "read_preference_pairs",
    "read_qrels",
    "read_queries",
    "read_sts_tsv",
    "read_text_lines",
    "validate_documents",
]
