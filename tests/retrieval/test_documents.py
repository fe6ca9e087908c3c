"""embedkit.data.validate_documents: the one set of rules for a batch of documents."""

import datetime
import logging

import pytest

from embedkit.data import is_blank, validate_documents
from embedkit.errors import EmbedkitError


def test_blank_documents_are_skipped_with_a_warning_naming_them(caplog):
    texts = ["a cat", "", "  \t\n", "\u200b\u200d\ufeff", "\x00\x00", "a dog"]
    with caplog.at_level(logging.WARNING, logger="embedkit.data.documents"):
        docs = validate_documents(texts, ["c", "e1", "e2", "zw", "nul", "d"], [{"n": i} for i in range(6)])
    assert docs.texts == ["a cat", "a dog"] and docs.ids == ["c", "d"] and docs.positions == [0, 5]
    assert docs.metadata == [{"n": 0}, {"n": 5}]
    assert docs.skipped_ids == ["e1", "e2", "zw", "nul"]
    assert "skipped 4 empty or whitespace-only documents (ids: 'e1', 'e2', 'zw', 'nul')" in caplog.text


def test_on_empty_error_keeps_the_refusal():
    with pytest.raises(EmbedkitError, match=r"document 1 \(id 'b'\) is empty or whitespace-only; remove it"):
        validate_documents(["x", " "], ["a", "b"], on_empty="error")
    with pytest.raises(EmbedkitError, match="on_empty must be 'skip' or 'error'"):
        validate_documents(["x"], on_empty="ignore")


def test_all_blank_and_no_documents():
    with pytest.raises(EmbedkitError, match="all 2 documents are empty"):
        validate_documents(["", " "])
    with pytest.raises(EmbedkitError, match="corpus is empty"):
        validate_documents([])
    with pytest.raises(EmbedkitError, match="single string"):
        validate_documents("one string")


def test_ids_generated_and_checked():
    assert validate_documents(["a", "b"], id_start=7).ids == ["7", "8"]
    assert validate_documents(["a", "b"], [3, 4]).ids == ["3", "4"]
    with pytest.raises(EmbedkitError, match="duplicate document ids: 'x'"):
        validate_documents(["a", "b"], ["x", "x"])
    with pytest.raises(EmbedkitError, match="document 1 has id None"):
        validate_documents(["a", "b"], ["x", None])
    with pytest.raises(EmbedkitError, match="document 0 has an empty id"):
        validate_documents(["a"], [" "])
    with pytest.raises(EmbedkitError, match="got 1 ids for 2 documents"):
        validate_documents(["a", "b"], ["x"])


@pytest.mark.parametrize("value", [datetime.date(2024, 1, 2), {1, 2}, b"bytes"])
def test_metadata_must_be_json_encodable(value):
    with pytest.raises(EmbedkitError, match=r"metadata of document 1 \(id 'b'\) \(key 'when'\) cannot be stored as JSON"):
        validate_documents(["a", "b"], ["a", "b"], [None, {"ok": 1, "when": value}])
    with pytest.raises(EmbedkitError, match="must be a dict or None, got list"):
        validate_documents(["a"], metadata=[[1]])


def test_non_text_document():
    with pytest.raises(EmbedkitError, match=r"document 0 \(id '0'\) is NoneType, expected text"):
        validate_documents([None])


def test_is_blank():
    assert is_blank("") and is_blank(" \u2060\u200b\r") and not is_blank("\u200bx")


@pytest.mark.parametrize("texts,ids,metadata,match", [
    (["a\ud800b"], ["x"], None, "its text holds a lone surrogate"),
    (["ab"], ["x\udfff"], None, "its id holds a lone surrogate"),
    (["ab"], ["x"], [{"v": float("nan")}], r"\(key 'v'\) cannot be stored as JSON"),
    (["ab"], ["x"], [{"v": float("inf")}], r"\(key 'v'\) cannot be stored as JSON"),
    (["ab"], ["x"], [{"k\ud800": 1}], "cannot be stored as JSON"),
])
def test_text_that_sqlite_or_json_cannot_hold_is_refused_naming_the_document(texts, ids, metadata, match):
    """NaN metadata was stored (and later broke every JSON answer that carried it); a lone surrogate
    raised a raw UnicodeEncodeError from SQLite."""
    with pytest.raises(EmbedkitError, match=match):
        validate_documents(texts, ids, metadata)
