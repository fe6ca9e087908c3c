"""``embedkit mine``: STS pairs (NV-Embed's stage-2 data) and which inputs it takes (issue 27)."""

from __future__ import annotations

import csv


def _sts(path):
    rows = ["score\tsentence1\tsentence2",
            "4.8\tthe cat is a pet\tthe cat is a small pet",
            "1.0\tthe stock market fell\ta dog runs fast",
            "4.2\tpython code has a bug\tthe python code has a bug",
            "0.5\tthe king and the queen\tfish and birds are animals",
            "2.0\ta cow eats food\tthe horse runs fast"]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_sts_pairs_become_triplets_in_both_directions(tmp_path, invoke, tiny_model_path, isolated_cache):
    out = tmp_path / "t.tsv"
    res = invoke("mine", "-m", tiny_model_path, "--sts", _sts(tmp_path / "sts.tsv"), "--negatives", "2",
                 "--max-positive-ratio", "1.0", "--candidates", "20", "-o", out, "-q", "--json")
    assert res.code == 0, res.stderr
    with open(out, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["anchor", "positive", "negative_1", "negative_2"]
    assert sorted((a, p) for a, p, *_ in rows[1:]) == sorted([
        ("the cat is a pet", "the cat is a small pet"), ("the cat is a small pet", "the cat is a pet"),
        ("python code has a bug", "the python code has a bug"), ("the python code has a bug", "python code has a bug")])
    for anchor, positive, *negs in rows[1:]:
        assert anchor not in negs and positive not in negs and len(set(negs)) == 2  # never itself or its positive


def test_mine_takes_sts_or_pairs_with_a_corpus(tmp_path, invoke, no_model):
    sts = _sts(tmp_path / "sts.tsv")
    res = invoke("mine", "--sts", sts, "--pairs", sts, "-o", tmp_path / "t.tsv")
    res.one_line_error("give --sts FILE, or --pairs with --corpus, not both")
    invoke("mine", "--pairs", sts, "-o", tmp_path / "t.tsv").one_line_error("give --pairs and --corpus (or --sts FILE)")
