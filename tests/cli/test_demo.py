import pytest
from click.testing import CliRunner

from embedkit.cli.demo import QUERIES, pydoc_corpus
from embedkit.cli.main import cli


def test_pydoc_corpus_is_available_offline_and_distinct():
    stats = {}
    ids, texts, meta = pydoc_corpus(stats=stats)
    assert len(texts) > 1000 and len(set(ids)) == len(ids)
    assert all(len(t) >= 80 for t in texts)
    # a paragraph that appears under two topics (e.g. compound#19 and try#0) is kept once
    assert len(set(texts)) == len(texts)
    assert stats["duplicates"] > 0 and stats["paragraphs"] == len(texts) + stats["duplicates"]


def test_demo_with_a_tiny_model_says_what_it_encodes(tiny_model_path, isolated_cache, tmp_path, invoke):
    res = invoke("demo", "-m", tiny_model_path, "--limit", "60", "--out", tmp_path / "d")
    assert res.code == 0, res.stderr
    for q in QUERIES:
        assert f"Q: {q}" in res.stdout
    assert "Index binary + rescore x4: 60 documents" in res.stdout
    assert "corpus: 60 distinct paragraphs" in res.stderr and "repeated under another topic and dropped" in res.stderr
    hits = [line for line in res.stdout.splitlines() if line.startswith("   ")]
    for i in range(0, len(hits), 3):  # no paragraph shown twice for one query
        assert len({h.split("]", 1)[1] for h in hits[i:i + 3]}) == 3
    assert (tmp_path / "d" / "index-binary" / "manifest.json").exists()
    # the demo folder is an embedkit output: a rerun needs --overwrite, and then replaces it
    invoke("demo", "-m", tiny_model_path, "--limit", "60", "--out", tmp_path / "d").one_line_error("--overwrite")
    assert invoke("demo", "-m", tiny_model_path, "--limit", "60", "--out", tmp_path / "d", "--overwrite", "-q").code == 0


def test_demo_spec_float(tiny_model_path, isolated_cache, invoke):
    """Was UnboundLocalError: both loop entries were named "float"."""
    res = invoke("demo", "-m", tiny_model_path, "--limit", "30", "--spec", "float")
    assert res.code == 0, (res.stderr, res.exception)
    assert "Index float: 30 documents" in res.stdout
    assert sum(line.startswith("float ") for line in res.stdout.splitlines()) == 1


@pytest.mark.slow
def test_demo_runs_end_to_end(isolated_cache, tmp_path):
    res = CliRunner().invoke(cli, ["demo", "--limit", "120", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    for q in QUERIES:
        assert f"Q: {q}" in res.output
    assert "binary + rescore x4" in res.output and "float" in res.output
    assert (tmp_path / "d" / "index-binary" / "manifest.json").exists()
