"""Fixtures for the command-line tests: in-process invocation and a trap for model loading."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli


class Result:
    def __init__(self, res):
        self.code, self.stdout, self.stderr, self.exception = res.exit_code, res.stdout, res.stderr, res.exception

    def one_line_error(self, fragment: str, code: int = 2) -> str:
        """Assert: exit status ``code``, stderr is exactly one ``error: ...`` line containing ``fragment``."""
        lines = self.stderr.strip().splitlines()
        assert self.code == code, (self.code, self.stderr, self.exception)
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr
        assert fragment in lines[0], lines[0]
        assert "Traceback" not in self.stderr
        return lines[0]


@pytest.fixture()
def invoke():
    """Run ``embedkit ARGS`` in-process (the same error handler as the console script)."""

    def run(*args, **kwargs):
        return Result(CliRunner().invoke(cli, [str(a) for a in args], **kwargs))

    return run


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if any model is loaded (cheap checks must come first)."""

    def trap(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr("embedkit.models.loading.load_encoder", trap)
    monkeypatch.setattr("embedkit.models.loading.load_causal_lm", trap)
    return trap
