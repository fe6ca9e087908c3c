"""Issue 12: every unreadable input is one DataFormatError line naming the file (and line, and byte)."""

import gzip
import json
import math

import numpy as np
import pytest

from embedkit.data import (
    MAX_TEXT_CHARS,
    check_texts,
    cut_texts,
    is_blank,
    iter_jsonl,
    iter_tsv_rows,
    open_text,
    read_beir,
    read_corpus,
    read_labelled_tsv,
    read_qrels,
    read_queries,
    read_sts_tsv,
    read_text_lines,
)
from embedkit.errors import DataFormatError, EmbedkitError


def _bad_utf8_at(offset: int, line_len: int = 100) -> bytes:
    """Valid lines of ``line_len`` bytes, then an invalid byte exactly at ``offset``."""
    body = b""
    while len(body) + line_len <= offset:
        body += b"x" * (line_len - 1) + b"\n"
    body += b"y" * (offset - len(body))
    return body + b"\xff rest\n"


@pytest.mark.parametrize("name", ["t.txt", "t.txt.gz"])
def test_utf8_error_reports_file_offset_and_line(tmp_path, name):
    data = _bad_utf8_at(100_000)
    p = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(p, "wb") as f:
            f.write(data)
    else:
        p.write_bytes(data)
    line = data[:100_000].count(b"\n") + 1
    inside = " of the decompressed data" if name.endswith(".gz") else ""
    with pytest.raises(DataFormatError) as e:
        read_text_lines(p)
    assert str(e.value) == (f"{name}:{line}: not valid UTF-8 (invalid start byte at byte 100000{inside}); "
                            "save the file as UTF-8")


def test_utf8_error_in_every_reader(tmp_path):
    ok = "x" * 5000
    jl = tmp_path / "c.jsonl"
    jl.write_bytes((json.dumps({"_id": "1", "text": ok}) + "\n").encode() + b'{"_id": "2", "text": "caf\xe9"}\n')
    off = len(json.dumps({"_id": "1", "text": ok})) + 1 + len('{"_id": "2", "text": "caf')
    with pytest.raises(DataFormatError, match=rf"^c.jsonl:2: not valid UTF-8 \(invalid continuation byte at byte {off}\)"):
        read_corpus(jl)
    with pytest.raises(DataFormatError, match="c.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(jl))
    tsv = tmp_path / "s.tsv"
    tsv.write_bytes(b"score\tsentence1\tsentence2\n1\ta\tb\n2\t\x80\tb\n")
    with pytest.raises(DataFormatError, match=r"^s.tsv:3: not valid UTF-8 \(invalid start byte at byte 34\)"):
        read_sts_tsv(tsv)
    with pytest.raises(DataFormatError, match="s.tsv:3: not valid UTF-8"):
        read_labelled_tsv(tsv)
    q = tmp_path / "q.jsonl"
    q.write_bytes(b'{"_id": "q", "text": "\xc3"}\n')
    with pytest.raises(DataFormatError, match="q.jsonl:1: not valid UTF-8"):
        read_queries(q)
    # a keyword file (label<TAB>keywords) is read line by line through open_text
    kw = tmp_path / "kw.tsv"
    kw.write_bytes(b"Sports\tgame team\nWorld\tp\xe9ople\n")
    with pytest.raises(DataFormatError, match=r"kw.tsv:2: not valid UTF-8 \(invalid continuation byte at byte 24\)"):
        with open_text(kw) as f:
            for _ in f:
                pass
    # an invalid sequence cut by the end of the file
    end = tmp_path / "end.txt"
    end.write_bytes(b"ok\n\xe2\x82")
    with pytest.raises(DataFormatError, match=r"end.txt:2: not valid UTF-8 \(unexpected end of data at byte 3\)"):
        read_text_lines(end)


def test_bom_is_skipped(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"_id": "a", "text": "x"}).encode() + b"\n")
    assert read_corpus(p).ids == ["a"]


def _gz_bytes(text: str) -> bytes:
    import io

    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(text.encode())
    return buf.getvalue()


def test_corrupt_and_truncated_gzip(tmp_path):
    lines = "".join(json.dumps({"_id": str(i), "text": f"document number {i} " * 20}) + "\n" for i in range(300))
    good = _gz_bytes(lines)
    p = tmp_path / "corpus.jsonl.gz"
    p.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"^corpus.jsonl.gz: the gzip file is truncated"):
        read_corpus(p)  # EOFError before: the CLI printed "aborted", exit 130
    p.write_bytes(b"this is not gzip at all\n")
    with pytest.raises(DataFormatError, match=r"^corpus.jsonl.gz: not a valid gzip file"):
        read_corpus(p)
    damaged = bytearray(good)
    damaged[-8] ^= 0xFF  # a flipped byte in the CRC
    p.write_bytes(bytes(damaged))
    with pytest.raises(DataFormatError, match=r"^corpus.jsonl.gz: not a valid gzip file \(CRC check failed"):
        read_corpus(p)
    damaged = bytearray(good)
    damaged[40] ^= 0xFF  # a flipped byte early in the deflate stream: some one-line error, never a traceback
    p.write_bytes(bytes(damaged))
    with pytest.raises(DataFormatError, match=r"^corpus.jsonl.gz"):
        read_corpus(p)
    t = tmp_path / "q.tsv.gz"
    t.write_bytes(_gz_bytes("query-id\tcorpus-id\tscore\nq\td\t1\n")[:-12])
    with pytest.raises(DataFormatError, match="q.tsv.gz: the gzip file is truncated"):
        read_qrels(t)


def test_gzip_recognised_by_content(tmp_path):
    p = tmp_path / "lines.txt"
    p.write_bytes(_gz_bytes("one\ntwo\n"))
    assert read_text_lines(p) == ["one", "two"]


def test_null_and_non_string_text_refused(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps({"_id": "a", "text": "fine"}) + "\n" + json.dumps({"_id": "b", "text": None}) + "\n")
    with pytest.raises(DataFormatError, match=r"^c.jsonl:2: 'text' is null; give a string"):
        read_corpus(p)  # was indexed as the text "None"
    p.write_text(json.dumps({"_id": "b", "text": 12}) + "\n")
    with pytest.raises(DataFormatError, match=r"c.jsonl:1: 'text' is a JSON int, expected a string"):
        read_corpus(p)
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"_id": "q1", "text": None}) + "\n")
    with pytest.raises(DataFormatError, match="q.jsonl:1: 'text' is null"):
        read_queries(q)
    d = tmp_path / "beir"
    d.mkdir()
    (d / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "t", "text": None}) + "\n")
    (d / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "x"}) + "\n")
    with pytest.raises(DataFormatError, match="corpus.jsonl:1: 'text' is null"):
        read_beir(d)
    # a null title is simply no title
    (d / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": None, "text": "body"}) + "\n")
    assert read_corpus(d).texts == ["body"]


ZW = ["\u200b", "\u200c\u200d", "\u2060 \ufeff", "\x00\x00", " \t\u200b\x00\n"]


@pytest.mark.parametrize("text", ZW)
def test_zero_width_and_nul_texts_are_empty(text):
    assert is_blank(text)
    with pytest.raises(EmbedkitError, match="text 1 is empty or whitespace-only"):
        check_texts(["ok", text])


def test_visible_texts_are_not_blank():
    for t in ["a", "\u200bb", "\x00x", "é", "日本"]:
        assert not is_blank(t)
    check_texts(["a", "\u200bb"])


def test_zero_width_lines_and_sentences(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("one\n\u200b\u200b\n\x00\ntwo\n")
    assert read_text_lines(p) == ["one", "two"]
    with pytest.raises(DataFormatError, match="t.txt:2: empty line"):
        read_text_lines(p, skip_empty=False)
    s = tmp_path / "s.tsv"
    s.write_text("score\tsentence1\tsentence2\n1\ta\tb\n2\t\u200b\tb\n")
    with pytest.raises(DataFormatError, match="s.tsv:3: empty sentence"):
        read_sts_tsv(s)


def test_sts_with_equal_scores_is_refused(tmp_path):
    from embedkit.evaluation.sts import spearman_cosine

    p = tmp_path / "flat.tsv"
    p.write_text("score\tsentence1\tsentence2\n" + "".join(f"3\ta {i}\tb {i}\n" for i in range(5)))
    with pytest.raises(DataFormatError, match=r"^flat.tsv: all 5 scores are 3; a Spearman correlation needs"):
        read_sts_tsv(p)
    rng = np.random.default_rng(0)
    e1, e2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    with pytest.raises(EmbedkitError, match="all 5 gold scores are equal"):
        spearman_cosine(e1, e2, [3.0] * 5)  # was nan
    assert math.isfinite(spearman_cosine(e1, e2, [1, 2, 3, 4, 5]))


def _write(p, text):
    p.write_text(text)
    return p


def test_qrels_scores_and_unknown_ids(tmp_path):
    h = "query-id\tcorpus-id\tscore\n"
    p = tmp_path / "qrels.tsv"
    assert read_qrels(_write(p, h + "q1\td1\t1\nq1\td2\t2.0\nq2\td1\t0\n")) == {"q1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}
    for bad, why in (("high", "is not a number"), ("inf", "is not finite"), ("nan", "is not finite"),
                     ("-inf", "is not finite"), ("0.5", "is not an integer relevance grade")):
        with pytest.raises(DataFormatError, match=rf"^qrels.tsv:3: score '{bad}' {why}"):
            read_qrels(_write(p, h + f"q1\td1\t1\nq1\td2\t{bad}\n"))
    with pytest.raises(DataFormatError, match=r"qrels.tsv:2: expected 3 tab-separated fields"):
        read_qrels(_write(p, h + "q1\td1\n"))
    with pytest.raises(DataFormatError, match=r"^qrels.tsv:3: unknown document id 'd9'"):
        read_qrels(_write(p, h + "q1\td1\t1\nq1\td9\t1\n"), doc_ids=["d1", "d2"])
    with pytest.raises(DataFormatError, match=r"qrels.tsv:2: unknown query id 'q7'"):
        read_qrels(_write(p, h + "q7\td1\t1\n"), query_ids={"q1"})
    with pytest.raises(DataFormatError, match="qrels.tsv: no judgements found"):
        read_qrels(_write(p, h))


def test_beir_qrels_inf_is_refused(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "x"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tinf\n")
    with pytest.raises(DataFormatError, match=r"test.tsv:2: score 'inf' is not finite"):
        read_beir(tmp_path)  # OverflowError traceback before


def test_queries_reader(tmp_path):
    q = tmp_path / "q.jsonl.gz"
    with gzip.open(q, "wt") as f:
        f.write(json.dumps({"_id": 1, "text": "one"}) + "\n\n" + json.dumps({"_id": "2", "text": "two"}) + "\n")
    assert read_queries(q) == {"1": "one", "2": "two"}
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n" + json.dumps({"_id": "a", "text": "y"}) + "\n")
    with pytest.raises(DataFormatError, match="d.jsonl:2: duplicate query id 'a'"):
        read_queries(p)
    p.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(DataFormatError, match="d.jsonl:1: a query needs '_id' and 'text'"):
        read_queries(p)


def test_read_corpus_shapes(tmp_path):
    t = tmp_path / "c.txt"
    t.write_text("first\n\nthird\n")
    ids, texts, meta = read_corpus(t)
    assert (ids, texts, meta) == (["1", "3"], ["first", "third"], [None, None])  # ids are line numbers
    j = tmp_path / "c.jsonl.gz"
    with gzip.open(j, "wt") as f:
        f.write(json.dumps({"_id": "a", "title": "T", "text": "body"}) + "\n")
        f.write(json.dumps({"id": 7, "text": "x"}) + "\n")
        f.write(json.dumps({"text": "no id"}) + "\n")
        f.write(json.dumps({"_id": "e", "text": ""}) + "\n")  # empty: kept, the caller decides
    c = read_corpus(j)
    assert c.ids == ["a", "7", "3", "e"]
    assert c.texts == ["T body", "x", "no id", ""]
    assert c.metadata == [{"title": "T"}, None, None, None]
    j2 = tmp_path / "dup.jsonl"
    j2.write_text(json.dumps({"_id": "a", "text": "x"}) + "\n" + json.dumps({"_id": "a", "text": "y"}) + "\n")
    with pytest.raises(DataFormatError, match="dup.jsonl:2: duplicate document id 'a'"):
        read_corpus(j2)
    j2.write_text(json.dumps({"_id": "a"}) + "\n")
    with pytest.raises(DataFormatError, match="dup.jsonl:1: a document needs a 'text' field"):
        read_corpus(j2)
    with pytest.raises(DataFormatError, match="file not found"):
        read_corpus(tmp_path / "nope.txt")


def test_beir_folder_with_empty_documents(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "text": "x"}) + "\n" + json.dumps({"_id": "d2", "title": "", "text": "\u200b"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what"}) + "\n")
    with pytest.raises(DataFormatError, match="corpus.jsonl:2: document 'd2' has empty title and text"):
        read_beir(tmp_path)
    assert list(read_beir(tmp_path, on_empty="skip").corpus) == ["d1"]
    assert list(read_beir(tmp_path, on_empty="keep").corpus) == ["d1", "d2"]
    # read_corpus keeps them, so that an index can skip them with a warning (or refuse them)
    assert read_corpus(tmp_path).ids == ["d1", "d2"]


def test_cut_texts():
    long = "word " * (MAX_TEXT_CHARS // 4)
    out, n = cut_texts(["short", long])
    assert n == 1 and out[0] == "short" and len(out[1]) == MAX_TEXT_CHARS and long.startswith(out[1])
    assert cut_texts(["abc"], None) == (["abc"], 0)
    with pytest.raises(EmbedkitError, match="max_chars"):
        cut_texts(["abc"], 0)


def test_iter_tsv_rows_empty_file(tmp_path):
    p = tmp_path / "e.tsv"
    p.write_text("")
    with pytest.raises(DataFormatError, match="e.tsv: file is empty"):
        list(iter_tsv_rows(p))
