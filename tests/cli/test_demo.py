from click.testing import CliRunner

from embedkit.cli.demo import QUERIES, pydoc_corpus
from embedkit.cli.main import cli


def test_pydoc_corpus_is_available_offline():
    ids, texts, meta = pydoc_corpus()
    assert len(texts) > 1000 and len(set(ids)) == len(ids)
    assert all(len(t) >= 80 for t in texts)


def test_demo_runs_end_to_end(isolated_cache, tmp_path):
    res = CliRunner().invoke(cli, ["demo", "--limit", "120", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    for q in QUERIES:
        assert f"Q: {q}" in res.output
    assert "binary + rescore x4" in res.output and "float" in res.output
    assert (tmp_path / "d" / "index-binary" / "manifest.json").exists()
