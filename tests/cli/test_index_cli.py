import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli, main


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_text("the cat and the kitten\nstock price and market rate\npython code has a bug\nthe dog and the puppy\n")
    return p


def run(args):
    """Invoke the CLI like the console script does (exit codes and one-line errors included)."""
    res = subprocess.run([sys.executable, "-m", "embedkit.cli.main", *args], capture_output=True, text=True)
    return res


def test_build_search_eval_json(tiny_model_path, corpus, tmp_path, isolated_cache):
    r = CliRunner()
    out = tmp_path / "ix"
    res = r.invoke(cli, ["index", "build", "--model", tiny_model_path, "--corpus", str(corpus), "--out", str(out),
                         "--spec", "binary", "--rescore", "2", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["documents"] == 4 and summary["bytes_per_vector"] == 4
    res = r.invoke(cli, ["index", "search", str(out), "the", "dog", "and", "the", "puppy", "-k", "2", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)["hits"]
    assert hits[0]["id"] == "4" and hits[0]["text"] == "the dog and the puppy"
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "the dog and the puppy"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4\t1\n")
    res = r.invoke(cli, ["index", "eval", str(out), "--queries", str(tmp_path / "q.jsonl"), "--qrels",
                         str(tmp_path / "qrels.tsv"), "--json"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert ev["ndcg@10"] == pytest.approx(1.0) and ev["mrr@10"] == pytest.approx(1.0)
    for key in ("recall@100", "bytes_per_vector", "index_bytes_on_disk", "p50_ms", "batch_qps"):
        assert key in ev


def test_encode_cli(tiny_model_path, corpus, tmp_path, isolated_cache):
    res = CliRunner().invoke(cli, ["encode", "--model", tiny_model_path, "--input", str(corpus), "--out",
                                   str(tmp_path / "emb"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["count"] == 4


@pytest.mark.parametrize("args,msg", [
    (["index", "search", "/nonexistent/ix", "hello"], "no index folder"),
    (["index", "build", "--corpus", "/nonexistent/docs.txt", "--out", "x"], "file not found"),
    (["index", "build", "--corpus", "CORPUS", "--out", "OUT", "--spec", "bogus:3"], "unknown compression stage"),
    (["index", "build", "--corpus", "CORPUS", "--out", "OUT", "--model", "/nonexistent/model"], "does not exist"),
])
def test_errors_are_one_line_with_exit_2(args, msg, corpus, tmp_path):
    args = [a.replace("CORPUS", str(corpus)).replace("OUT", str(tmp_path / "o")) for a in args]
    res = run(args)
    assert res.returncode == 2, res.stderr
    err_lines = [line for line in res.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and msg in err_lines[0]
    assert "Traceback" not in res.stderr


def test_empty_corpus_file_error(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n  \n")
    res = run(["index", "build", "--corpus", str(p), "--out", str(tmp_path / "o")])
    assert res.returncode == 2 and "no text lines" in res.stderr


def test_help_lists_commands():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in ("demo", "encode", "index"):
        assert name in res.output
    res = CliRunner().invoke(cli, ["index", "build", "--help"])
    assert "--spec" in res.output and "--rescore" in res.output
