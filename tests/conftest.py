"""Shared fixtures: offline settings, a tiny random model, the default model, the real data folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir():
    """The real data (../shared/data or $EMBEDKIT_DATA). Present in CI: tests that need it must not skip."""
    from embedkit._io import data_dir as _dd

    d = _dd()
    assert d.is_dir(), f"real data folder missing at {d}; set EMBEDKIT_DATA"
    return d


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    from embedkit.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path):
    from embedkit import load_encoder

    return load_encoder(tiny_model_path)


@pytest.fixture(scope="session")
def default_model():
    from embedkit import load_encoder

    return load_encoder()


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """Point the embedding cache at a fresh folder for this test."""
    monkeypatch.setenv("EMBEDKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
