"""Every docstring example written as ``>>>`` runs and prints what it shows (others are code blocks)."""

from __future__ import annotations

import doctest
import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "embedkit"
MODULES = sorted(
    str(p.relative_to(ROOT.parent).with_suffix("")).replace(os.sep, ".").removesuffix(".__init__")
    for p in ROOT.rglob("*.py")
    if ">>> " in p.read_text(encoding="utf-8") and p.name != "__main__.py"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name}: '>>>' in the source but no doctest found"
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} docstring example(s) failed (run python -m doctest -v)"
