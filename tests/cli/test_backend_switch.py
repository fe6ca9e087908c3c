"""Issue 28 item 1: ``--backend`` is a speed choice over the same weights.

An index built with torch is searched, evaluated and served with onnx / onnx-int8 of the same model (and
the other way round) without ``-m``; ``--json`` names the runtime that encoded the query; an older index
that records only its onnx fingerprint gets an error that says exactly what to pass.
"""

from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("onnxruntime")

DOCS = "the cat and the kitten\nstock price and market rate\npython code has a bug\nthe dog and the puppy\n"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny model with its ONNX exports made once (the export, not the backend switch, takes the time)."""
    from embedkit import load_encoder
    from embedkit.testing import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("backend") / "tiny")
    load_encoder(path, backend="onnx-int8")
    return path


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_text(DOCS)
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "the dog and the puppy"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t4\t1\n")
    return p


def _build(invoke, model_path, corpus, out, *extra):
    res = invoke("index", "build", "-m", model_path, "-c", corpus, "-o", out, "--json", *extra)
    assert res.code == 0, res.stderr
    if "hnsw" in extra:
        assert "warning: --backend hnsw is the old spelling of --index-type hnsw" in res.stderr
    return json.loads(res.stdout)


def _search(invoke, out, *extra):
    res = invoke("index", "search", out, "the dog and the puppy", "-k", "2", "--json", *extra)
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)


def test_torch_index_searched_and_evaluated_with_onnx_backends(invoke, model_path, corpus, tmp_path, isolated_cache):
    out = tmp_path / "ix"
    built = _build(invoke, model_path, corpus, out)
    assert built["index_type"] == "flat" and built["backend"] == "torch"
    old = _build(invoke, model_path, corpus, tmp_path / "old", "--backend", "hnsw")  # the old spelling still works
    assert old["index_type"] == "hnsw" and old["backend"] == "torch"
    torch_hits = _search(invoke, out)
    assert torch_hits["backend"] == "torch" and torch_hits["index_type"] == "flat"
    got = {b: _search(invoke, out, "--backend", b) for b in ("onnx", "onnx-int8")}  # no -m: the index's model
    for backend, res in got.items():
        assert res["backend"] == backend
        assert res["hits"][0]["id"] == torch_hits["hits"][0]["id"] == "4"
    assert got["onnx-int8"]["hits"][0]["score"] != torch_hits["hits"][0]["score"]  # really another runtime
    res = invoke("index", "eval", out, "--queries", tmp_path / "q.jsonl", "--qrels", tmp_path / "qrels.tsv",
                 "--backend", "onnx-int8", "--json")
    assert res.code == 0, res.stderr
    ev = json.loads(res.stdout)
    assert ev["backend"] == "onnx-int8" and ev["index_type"] == "flat" and ev["ndcg@10"] == pytest.approx(1.0)


def test_onnx_index_searched_with_torch_and_with_its_model(invoke, model_path, corpus, tmp_path, isolated_cache):
    out = tmp_path / "ix8"
    assert _build(invoke, model_path, corpus, out, "--backend", "onnx-int8")["backend"] == "onnx-int8"
    assert _search(invoke, out)["backend"] == "onnx-int8"  # the runtime it was built with
    assert _search(invoke, out, "-m", model_path)["backend"] == "onnx-int8"  # -m alone keeps it
    assert _search(invoke, out, "--backend", "torch")["backend"] == "torch"
    assert _search(invoke, out, "-m", model_path, "--backend", "torch")["hits"][0]["id"] == "4"


def test_older_onnx_index_error_says_what_to_pass(model_path, corpus, tmp_path, isolated_cache):
    """An index saved before the weights fingerprint was recorded cannot check another runtime: the error
    names the backend to pass."""
    from embedkit import EmbeddingIndex, load_encoder
    from embedkit.errors import ModelMismatchError

    int8 = load_encoder(model_path, backend="onnx-int8")
    idx = EmbeddingIndex.build(DOCS.split("\n")[:4], model=int8, show_progress=False)
    idx.save(tmp_path / "old")
    old = EmbeddingIndex.load(tmp_path / "old")
    assert old.model_weights is not None and old.model_backend == "onnx-int8"
    old.model_weights = None  # as an index saved by an older embedkit
    with pytest.raises(ModelMismatchError, match=r"fingerprint [0-9a-f]+ \(backend torch\)\. This index records only "
                                                 r"the fingerprint of its onnx-int8 encoder .* query it with "
                                                 r"backend='onnx-int8' \(--backend onnx-int8\), or rebuild the index$"):
        old.use_model(load_encoder(model_path))
    old.use_model(load_encoder(model_path, backend="onnx-int8"))  # the same runtime still passes


def test_python_index_type_and_deprecated_backend_keyword(model_path):
    from embedkit import EmbeddingIndex
    from embedkit.errors import EmbedkitError

    texts = DOCS.split("\n")[:4]
    idx = EmbeddingIndex.build(texts, model=model_path, index_type="hnsw", show_progress=False)
    assert idx.index_type == "hnsw" and idx.backend == "hnsw"
    with pytest.warns(DeprecationWarning, match="backend= is the old name of index_type="):
        old = EmbeddingIndex.build(texts, model=model_path, backend="hnsw", show_progress=False)
    assert old.index_type == "hnsw"
    with pytest.raises(EmbedkitError, match=r"^backend='onnx-int8' is an encoder runtime, not an index structure: "
                                            r"load the model with load_encoder\(\.\.\., backend='onnx-int8'\)"):
        EmbeddingIndex(None, "float", backend="onnx-int8")


def test_serve_uses_backend_without_model(invoke, model_path, corpus, tmp_path, isolated_cache, monkeypatch):
    """`serve INDEX --backend onnx-int8` (no -m) loads the index's model on onnx-int8."""
    pytest.importorskip("fastapi")
    from embedkit.cli import serve as serve_cli

    out = tmp_path / "ix"
    _build(invoke, model_path, corpus, out)
    seen = {}

    def fake_run(app, host, port, access_log, service, sockets):
        seen["backend"] = type(service.index.model).__name__, service.index.model.backend
        seen["stats"] = service.stats()
        service.close()

    monkeypatch.setattr(serve_cli, "_run", fake_run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = invoke("serve", out, "--port", port, "--read-only", "--backend", "onnx-int8")
    assert res.code == 0, res.stderr
    assert seen["backend"] == ("OnnxEncoder", "onnx-int8")
    assert seen["stats"]["backend"] == "onnx-int8" and seen["stats"]["index_type"] == "flat"
    assert "queries encoded with onnx-int8" in res.stderr
