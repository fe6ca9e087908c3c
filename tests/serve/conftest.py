"""Fixtures for the server tests: a small index over the tiny random model, services and clients."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from serve_helpers import DOCS, make_service  # noqa: E402


@pytest.fixture(scope="session")
def index_template(tmp_path_factory, tiny_model):
    """A saved binary + rescore index of DOCS (copied per test: the server writes beside it)."""
    from embedkit import EmbeddingIndex

    path = tmp_path_factory.mktemp("serve_template") / "idx"
    ids, texts, meta = zip(*DOCS)
    idx = EmbeddingIndex.build(list(texts), list(ids), list(meta), model=tiny_model, spec="binary", rescore=4,
                               show_progress=False, cache=False)
    idx.save(path)
    return path


@pytest.fixture
def index_dir(index_template, tmp_path):
    import shutil

    dst = tmp_path / "idx"
    shutil.copytree(index_template, dst)
    return dst


@pytest.fixture
def service_factory(index_dir, tiny_model):
    made = []

    def factory(**cfg):
        svc = make_service(index_dir, tiny_model, **cfg)
        made.append(svc)
        return svc

    yield factory
    for svc in made:
        svc.close()


@pytest.fixture
def client_factory(service_factory):
    from fastapi.testclient import TestClient

    from embedkit.serve.app import create_app

    clients = []

    def factory(base_url="http://testserver", raise_server_exceptions=True, **cfg):
        svc = service_factory(**cfg)
        c = TestClient(create_app(svc), base_url=base_url, raise_server_exceptions=raise_server_exceptions)
        c.__enter__()
        c.service = svc
        clients.append(c)
        return c

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(client_factory):
    return client_factory()
