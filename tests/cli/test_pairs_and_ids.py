"""Issue 28 item 6: a pairs TSV without a header keeps its first pair, `mine` counts the rows it wrote,
and `index add` from a text file gets ids that cannot collide, chosen before anything is encoded."""

from __future__ import annotations

import csv
import json

import pytest

from embedkit.data import read_retrieval_pairs, read_text_pairs
from embedkit.errors import DataFormatError

CORPUS = ("the cat and the kitten sleep\nstock price and market rate\npython code has a bug\nthe dog and the puppy\n"
          "the bank rate is high\na fish is a pet\nthe king and the queen\nthe doctor and the nurse\n")


def test_retrieval_pairs_header_is_detected_by_content(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("what is a cat\t1\nwho has money\t2\n")  # no header: the first pair is a pair
    assert read_retrieval_pairs(p, doc_ids={"1", "2"}) == [("what is a cat", "1"), ("who has money", "2")]
    p.write_text("query\tcorpus-id\nwhat is a cat\t1\n")
    assert read_retrieval_pairs(p, doc_ids={"1"}) == [("what is a cat", "1")]
    p.write_text("query\tdoc_id\nwhat is a cat\t1\n")
    assert read_retrieval_pairs(p) == [("what is a cat", "1")]
    p.write_text("query\tdoc\nwhat is a cat\t1\n")  # "doc" is a document of this corpus: a pair, not a header
    assert read_retrieval_pairs(p, doc_ids={"doc", "1"}) == [("query", "doc"), ("what is a cat", "1")]
    p.write_text("what is a cat\tnope\nwho\t1\n")  # a first line naming an unknown document is an error, not a header
    with pytest.raises(DataFormatError, match=r"^pairs.tsv:1: positive document id 'nope' is not in the corpus$"):
        read_retrieval_pairs(p, doc_ids={"1"})
    p.write_text("query\tdoc_id\n")
    with pytest.raises(DataFormatError, match=r"^pairs.tsv: no pairs \(the file holds at most a header line\)$"):
        read_retrieval_pairs(p)


def test_text_pairs_header_is_optional(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("a cat\ta kitten\tthe bank\na dog\ta puppy\tthe stock\n")
    assert read_text_pairs(p) == [("a cat", "a kitten", "the bank"), ("a dog", "a puppy", "the stock")]
    p.write_text("anchor\tpositive\tnegative_1\na cat\ta kitten\tthe bank\n")
    assert read_text_pairs(p) == [("a cat", "a kitten", "the bank")]


def test_mine_keeps_a_headerless_first_pair_and_counts_rows_written(tmp_path, invoke, tiny_model_path,
                                                                     isolated_cache):
    corpus = tmp_path / "docs.txt"
    corpus.write_text(CORPUS)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a kitten sleeps\t1\nthe market\t2\nbuggy code\t3\na puppy\t4\n")
    out = tmp_path / "t.tsv"
    res = invoke("mine", "-m", tiny_model_path, "--pairs", pairs, "-c", corpus, "--negatives", "2",
                 "--max-positive-ratio", "1.0", "-o", out, "--json")
    assert res.code == 0, res.stderr
    stats = json.loads(res.stdout)
    with open(out, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    assert stats["pairs"] == 4 and "a kitten sleeps" in [r[0] for r in rows]  # the first pair is not a header
    assert stats["rows_written"] == len(rows) and stats["pairs_left_out"] == 4 - len(rows)
    res = invoke("mine", "-m", tiny_model_path, "--pairs", pairs, "-c", corpus, "--negatives", "2",
                 "--max-positive-ratio", "1.0", "-o", out, "--overwrite")
    assert res.code == 0, res.stderr
    assert res.stdout.startswith(f"wrote {out}: {len(rows)} rows (anchor, positive, 2 negatives)")


def test_index_add_text_file_gets_new_ids_before_encoding(tmp_path, invoke, tiny_model_path, isolated_cache,
                                                          monkeypatch):
    docs = tmp_path / "docs.txt"
    docs.write_text(CORPUS)
    idx = tmp_path / "ix"
    assert invoke("index", "build", "-m", tiny_model_path, "-c", docs, "-o", idx, "-q").code == 0
    more = tmp_path / "more.txt"
    more.write_text("a horse can run fast\n\nthe queen has a dog\n")
    res = invoke("index", "add", idx, "-c", more, "--json")
    assert res.code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["added"] == 2 and (out["first_id"], out["last_id"]) == ("9", "10") and out["documents"] == 10
    res = invoke("index", "search", idx, "the queen has a dog", "-k", "1", "--json")
    assert json.loads(res.stdout)["hits"][0]["id"] == "10"
    # the same file again: new numbers again, never a collision
    assert json.loads(invoke("index", "add", idx, "-c", more, "--json").stdout)["first_id"] == "11"

    # a JSON Lines file with an existing id is refused before any model loads
    clash = tmp_path / "clash.jsonl"
    clash.write_text('{"_id": "3", "text": "python code"}\n')

    def trap(*a, **k):
        raise AssertionError("the model was loaded before the ids were checked")

    monkeypatch.setattr("embedkit.models.loading.load_encoder", trap)
    invoke("index", "add", idx, "-c", clash).one_line_error("1 document id(s) already in")
