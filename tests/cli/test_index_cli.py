import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli


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
    args = ["encode", "--model", tiny_model_path, "--input", str(corpus), "--out", str(tmp_path / "emb"), "--json"]
    res = CliRunner().invoke(cli, args)  # --input: the old spelling of --corpus
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["count"] == 4
    res = CliRunner().invoke(cli, args)  # a rerun resumes the folder it wrote
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["resumed_shards"] == 1


def test_errors_are_one_line_with_exit_2(corpus, tmp_path):
    """The one real process for `index` (exit status and stderr as a shell sees them)."""
    res = run(["index", "search", "/nonexistent/ix", "hello"])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "no index folder" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args,msg", [
    (["index", "build", "--corpus", "/nonexistent/docs.txt", "--out", "x"], "file not found"),
    (["index", "build", "--corpus", "CORPUS", "--out", "OUT", "--spec", "bogus:3"], "unknown compression stage"),
    (["index", "build", "--corpus", "CORPUS", "--out", "OUT", "--model", "/nonexistent/model"], "does not exist"),
])
def test_errors_in_process(args, msg, corpus, tmp_path, invoke, no_model):
    args = [a.replace("CORPUS", str(corpus)).replace("OUT", str(tmp_path / "o")) for a in args]
    invoke(*args).one_line_error(msg)


def test_empty_corpus_file_error(tmp_path, invoke, no_model):
    p = tmp_path / "empty.txt"
    p.write_text("\n  \n")
    invoke("index", "build", "--corpus", str(p), "--out", str(tmp_path / "o")).one_line_error("no text lines")


def test_help_lists_commands():
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in ("demo", "encode", "index"):
        assert name in res.output
    res = CliRunner().invoke(cli, ["index", "build", "--help"])
    assert "--spec" in res.output and "--rescore" in res.output


@pytest.fixture()
def built(tiny_model_path, corpus, tmp_path, isolated_cache, invoke):
    out = tmp_path / "ix"
    res = invoke("index", "build", "-m", tiny_model_path, "--corpus", corpus, "--out", out, "--spec", "binary",
                 "--rescore", "2", "-q")
    assert res.code == 0, res.stderr
    assert res.stderr == ""  # --quiet: no notes, no progress bars
    return out


def test_add_and_remove_save_in_place(built, tmp_path, invoke):
    new = tmp_path / "new.jsonl"
    new.write_text('{"_id": "n1", "text": "the bank raised the interest rate"}\n'
                   '{"_id": "n2", "text": "a puppy and a kitten play"}\n')
    res = invoke("index", "add", built, "--corpus", new, "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout) == {"index": str(built), "added": 2, "documents": 6, "skipped_documents": 0,
                                      "first_id": "n1", "last_id": "n2"}
    res = invoke("index", "search", built, "the bank raised the interest rate", "-k", "1", "--json")
    assert json.loads(res.stdout)["hits"][0]["id"] == "n1"
    # adding the same ids again is refused, and the saved index is unchanged
    invoke("index", "add", built, "--corpus", new).one_line_error("n1")
    res = invoke("index", "remove", built, "n1", "2", "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout) == {"index": str(built), "removed": 2, "documents": 4}
    # an unknown id: nothing is removed
    invoke("index", "remove", built, "n2", "no-such-id").one_line_error("no-such-id")
    res = invoke("index", "search", built, "puppy", "-k", "10", "--json")
    ids = [h["id"] for h in json.loads(res.stdout)["hits"]]
    assert sorted(ids) == ["1", "3", "4", "n2"]


def test_search_json_reports_load_and_search_time_separately(built, invoke):
    res = invoke("index", "search", built, "the dog", "--json")
    assert res.code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["index_load_ms"] > 0 and out["model_load_ms"] > 0 and out["search_ms"] > 0
    res = invoke("index", "search", built, "the dog")
    assert "loading took" in res.stderr and "for the model" in res.stderr


def test_eval_prints_the_rescoring(built, tmp_path, invoke):
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "the dog and the puppy"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4\t1\n")
    res = invoke("index", "eval", built, "--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "qrels.tsv")
    assert res.code == 0, res.stderr
    assert "float16 rescoring x2" in res.stdout and "None" not in res.stdout
    (tmp_path / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4\thigh\n")
    res = invoke("index", "eval", built, "--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "bad.tsv")
    res.one_line_error("bad.tsv:2")


def test_blank_documents_skipped_or_refused_with_strict(tiny_model_path, tmp_path, isolated_cache, invoke):
    import inspect

    from embedkit.retrieval.index import EmbeddingIndex

    if "on_empty" not in inspect.signature(EmbeddingIndex.build).parameters:
        pytest.skip("EmbeddingIndex.build(on_empty=) not available yet")
    c = tmp_path / "c.jsonl"
    c.write_text('{"_id": "a", "text": "the cat"}\n{"_id": "b", "text": "  "}\n{"_id": "c", "text": "the dog"}\n')
    res = invoke("index", "build", "-m", tiny_model_path, "--corpus", c, "--out", tmp_path / "s", "--strict", "-q")
    res.one_line_error("'b'")
    assert not (tmp_path / "s").exists()
    res = invoke("index", "build", "-m", tiny_model_path, "--corpus", c, "--out", tmp_path / "k", "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["documents"] == 2 and json.loads(res.stdout)["skipped_documents"] == 1
    assert "b" in res.stderr  # the warning names the skipped id


def test_eval_refuses_qrels_naming_unknown_documents(built, tmp_path, invoke):
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "the dog and the puppy"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4\t1\nq1\tdoc-99\t1\n")
    res = invoke("index", "eval", built, "--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "qrels.tsv", "-q")
    res.one_line_error("qrels.tsv:3: unknown document id 'doc-99'")


@pytest.mark.parametrize("command", ["add", "search", "eval"])
def test_index_is_read_once_with_an_explicit_model(built, tiny_model_path, tmp_path, invoke, monkeypatch, command):
    """With -m the CLI reads the index once (its checks run on it before the model loads), then
    attaches the model with use_model (issue 23): before, add and eval read and verified it twice."""
    from embedkit.retrieval.base import IndexBase
    from embedkit.retrieval.index import EmbeddingIndex

    loads, used = [], []
    real_load, real_use = EmbeddingIndex.load.__func__, IndexBase.use_model
    monkeypatch.setattr(EmbeddingIndex, "load", classmethod(lambda cls, *a, **k: loads.append(a) or real_load(cls, *a, **k)))
    monkeypatch.setattr(IndexBase, "use_model", lambda self, m, force=False: used.append(m) or real_use(self, m, force))
    (tmp_path / "new.jsonl").write_text('{"_id": "n1", "text": "the bank raised the interest rate"}\n')
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "the dog and the puppy"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4\t1\n")
    args = {"add": ["--corpus", tmp_path / "new.jsonl"], "search": ["the dog"],
            "eval": ["--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "qrels.tsv"]}[command]
    res = invoke("index", command, built, *args, "-m", tiny_model_path)
    assert res.code == 0, res.stderr
    assert len(loads) == 1 and len(used) == 1 and type(used[0]).__name__ == "SentenceTransformer"
