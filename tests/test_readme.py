"""The README's Python snippet runs as written (it once called remove() on an id it never added)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


@pytest.mark.slow
def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    assert [h.id for h in ns["hits"]][0] == "doc-1"
    assert len(ns["index"]) == 3 and "doc-2" not in ns["index"]
    assert ns["codes"].shape == (3, 128)


def test_dir_embedkit_lists_the_public_api():
    import embedkit

    names = dir(embedkit)
    for name in ("load_encoder", "EmbeddingIndex", "quantizer_from_spec", "encode_cached", "evaluate_index",
                 "read_corpus", "EmbedkitError"):
        assert name in names
        getattr(embedkit, name)
    assert names != ["annotations"]
