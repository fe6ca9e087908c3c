import gzip
import json

import pytest

from embedkit.data import read_beir, read_labelled_tsv, read_sts_tsv, read_text_lines
from embedkit.errors import DataFormatError


@pytest.mark.slow
def test_real_sts_files_have_the_documented_counts(data_dir):
    counts = {"sts12": 3108, "sts13": 1500, "sts14": 3750, "sts15": 3000, "sts16": 1186, "stsb": 1379, "sickr": 4927}
    for name, n in counts.items():
        ds = read_sts_tsv(data_dir / "sts" / f"{name}.test.tsv")
        assert len(ds) == n
        assert all(0 <= s <= 5 for s in ds.scores)
    # sentences with double quotes survive unquoted reading
    ds = read_sts_tsv(data_dir / "sts" / "sts12.test.tsv")
    assert any('"' in s for s in ds.sentences1 + ds.sentences2)


def test_sts_malformed_rows_name_file_and_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("score\tsentence1\tsentence2\n4.0\ta\tb\n3.0\tonly two\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:3: expected 3"):
        read_sts_tsv(p)
    p.write_text("score\tsentence1\tsentence2\nhigh\ta\tb\n")
    with pytest.raises(DataFormatError, match=r"bad.tsv:2: score 'high' is not a number"):
        read_sts_tsv(p)
    p.write_text("score\tsentence1\tsentence2\nnan\ta\tb\n")
    with pytest.raises(DataFormatError, match="not finite"):
        read_sts_tsv(p)
    p.write_text("score\tsentence1\tsentence2\n1\t \tb\n")
    with pytest.raises(DataFormatError, match="bad.tsv:2: empty sentence"):
        read_sts_tsv(p)
    p.write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        read_sts_tsv(p)


@pytest.mark.slow
def test_real_scifact_beir(data_dir):
    ds = read_beir(data_dir / "retrieval" / "scifact")
    assert len(ds.corpus) == 5183
    ids, texts = ds.judged_queries()
    assert len(ids) == 300
    assert sum(len(v) for v in ds.qrels.values()) == 339
    doc_ids, doc_texts = ds.corpus_texts()
    assert len(doc_texts) == 5183 and all(t.strip() for t in doc_texts)


def _beir(tmp_path, corpus_lines, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\n"):
    (tmp_path / "qrels").mkdir(exist_ok=True)
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt") as f:
        f.write("\n".join(corpus_lines) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text(qrels)
    return tmp_path


def test_beir_errors(tmp_path):
    good = json.dumps({"_id": "d1", "title": "t", "text": "x"})
    assert len(read_beir(_beir(tmp_path, [good])).corpus) == 1
    with pytest.raises(DataFormatError, match=r"corpus.jsonl.gz:2: duplicate document id 'd1'"):
        read_beir(_beir(tmp_path, [good, good]))
    with pytest.raises(DataFormatError, match=r"corpus.jsonl.gz:2: invalid JSON"):
        read_beir(_beir(tmp_path, [good, "{oops"]))
    with pytest.raises(DataFormatError, match=r"unknown document id 'd9'"):
        read_beir(_beir(tmp_path, [good], "query-id\tcorpus-id\tscore\nq1\td9\t1\n"))
    with pytest.raises(DataFormatError, match="not a folder"):
        read_beir(tmp_path / "nope")


@pytest.mark.slow
def test_text_lines_and_labelled_tsv(tmp_path, data_dir):
    p = tmp_path / "t.txt.gz"
    with gzip.open(p, "wt") as f:
        f.write("one\n\ntwo\n")
    assert read_text_lines(p) == ["one", "two"]
    with pytest.raises(DataFormatError, match="t.txt.gz:2: empty line"):
        read_text_lines(p, skip_empty=False)
    labels, texts = read_labelled_tsv(data_dir / "topics" / "ag_news" / "test.tsv")
    assert len(texts) == 7600 and set(labels) == {"1", "2", "3", "4"}
    bad = tmp_path / "l.tsv"
    bad.write_text("label\ttext\n1\tok\n2\n")
    with pytest.raises(DataFormatError, match="l.tsv:3: expected 2"):
        read_labelled_tsv(bad)
