import json

import numpy as np
import pytest

from embedkit import EmbeddingIndex
from embedkit.errors import EmbedkitError, IndexFormatError, ModelMismatchError

DOCS = [
    "the cat and the kitten play with a ball", "stock price and market rate fell", "python code has a bug in the loop",
    "the dog and the puppy run fast", "the bank trade profit and loss", "search query vector index model",
    "the bird and the fish eat food", "the company share price is high", "a test data file for the program",
]


def rand_unit(n, d=32, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture()
def built(tiny_model, isolated_cache):
    return EmbeddingIndex.build(DOCS, [f"d{i}" for i in range(len(DOCS))], [{"n": i} for i in range(len(DOCS))],
                                model=tiny_model, spec="binary", rescore=4, show_progress=False)


@pytest.mark.parametrize("spec", ["float", "f16", "int8", "binary", "mrl:16", "mrl:16,binary"])
@pytest.mark.parametrize("backend", ["flat", "hnsw", "ivf"])
def test_self_retrieval_every_spec_and_backend(spec, backend):
    X = rand_unit(400, 32)
    idx = EmbeddingIndex.build([f"doc {i}" for i in range(400)], spec=spec, index_type=backend, embeddings=X,
                               rescore=4 if "binary" in spec else None, nlist=8)
    scores, ids = idx.search_ids(X[:20], 5)
    hit = np.mean([row[0] == f"{i}" for i, row in enumerate(ids)])
    assert hit >= (0.95 if ("binary" not in spec and "mrl" not in spec) else 0.8)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # sorted best first


def test_search_returns_ids_scores_texts_metadata(built, tiny_model):
    hits = built.search(DOCS[3], k=3)
    assert hits[0].id == "d3" and hits[0].text == DOCS[3] and hits[0].metadata == {"n": 3}
    assert hits[0].score == pytest.approx(1.0, abs=1e-2)  # rescored with float16 vectors
    batch = built.search([DOCS[0], DOCS[1]], k=2)
    assert [b[0].id for b in batch] == ["d0", "d1"]


def test_rescoring_equals_exact_float_ranking_within_candidates():
    X = rand_unit(300, 32, seed=1)
    Q = rand_unit(10, 32, seed=2)
    idx = EmbeddingIndex.build([f"t{i}" for i in range(300)], spec="binary", rescore=300, embeddings=X)
    scores, rows = idx.search_embeddings(Q, 5)
    exact = np.argsort(-(Q @ X.T), axis=1)[:, :5]  # oversampling covers the whole corpus -> exact
    np.testing.assert_array_equal(rows, exact)
    np.testing.assert_allclose(scores, np.take_along_axis(Q @ X.T, exact, 1), atol=2e-3)


def test_add_and_remove(built, tmp_path):
    built.add(["the queen and the king eat food"], ["new"])
    assert built.search("the queen and the king eat food", k=1)[0].id == "new"
    built.remove(["d3", "new"])
    for q in (DOCS[3], "the queen and the king eat food"):
        assert all(h.id not in ("d3", "new") for h in built.search(q, k=len(built)))
    assert len(built) == len(DOCS) - 1
    path = built.save(tmp_path / "ix")
    raw = b"".join(p.read_bytes() for p in path.iterdir())
    assert DOCS[3].encode() not in raw and b"the queen and the king" not in raw
    loaded = EmbeddingIndex.load(path)
    assert len(loaded) == len(DOCS) - 1
    assert all(h.id != "d3" for h in loaded.search(DOCS[3], k=len(loaded)))
    with pytest.raises(EmbedkitError, match="unknown document ids: 'd3'"):
        loaded.remove(["d3"])


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_remove_on_graph_and_ivf_backends(backend):
    X = rand_unit(200, 32, seed=3)
    idx = EmbeddingIndex.build([f"t{i}" for i in range(200)], spec="int8", index_type=backend, embeddings=X, nlist=4)
    idx.remove(["5", "17"])
    _, ids = idx.search_ids(X[[5, 17, 30]], 3)
    assert "5" not in ids[0] and "17" not in ids[1] and ids[2][0] == "30"


def test_save_load_roundtrip_identical_results(built, tmp_path):
    path = built.save(tmp_path / "ix")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["count"] == len(DOCS) and manifest["spec"] == "binary" and manifest["rescore"] == 4
    assert set(manifest["files"]) >= {"index.faiss", "docs.sqlite", "quantizer.json", "quantizer.npz", "rescore.f16.npy"}
    loaded = EmbeddingIndex.load(path)
    a = built.search(DOCS, k=4)
    b = loaded.search(DOCS, k=4)
    assert [[h.id for h in r] for r in a] == [[h.id for h in r] for r in b]
    assert isinstance(loaded._rescore_vecs, np.memmap)


# --- bad input -------------------------------------------------------------------------------

def test_bad_corpora(tiny_model):
    with pytest.raises(EmbedkitError, match="corpus is empty"):
        EmbeddingIndex.build([], model=tiny_model)
    with pytest.raises(EmbedkitError, match=r"document 1 \(id '1'\) is empty or whitespace-only"):
        EmbeddingIndex.build(["ok", "   "], model=tiny_model, on_empty="error")
    with pytest.raises(EmbedkitError, match="duplicate document ids: 'a'"):
        EmbeddingIndex.build(["x", "y"], ["a", "a"], model=tiny_model)
    with pytest.raises(EmbedkitError, match="expected a list of documents"):
        EmbeddingIndex.build("just one string", model=tiny_model)


def test_nan_and_wrong_dimension_embeddings():
    X = rand_unit(10)
    bad = X.copy()
    bad[4, 0] = np.inf
    with pytest.raises(EmbedkitError, match=r"NaN or inf \(first at row 4\)"):
        EmbeddingIndex.build([f"t{i}" for i in range(10)], embeddings=bad)
    idx = EmbeddingIndex.build([f"t{i}" for i in range(10)], embeddings=X)
    with pytest.raises(EmbedkitError, match="query embeddings have dimension 16, expected 32"):
        idx.search_embeddings(rand_unit(2, 16), 3)
    with pytest.raises(EmbedkitError, match="document embeddings have dimension 8, expected 32"):
        idx.add(["x"], ["new"], embeddings=rand_unit(1, 8))
    with pytest.raises(EmbedkitError, match="already in the index: '1'"):
        idx.add(["x"], ["1"], embeddings=rand_unit(1, 32))


def test_truncated_index_file_is_refused(built, tmp_path):
    path = built.save(tmp_path / "ix")
    data = (path / "index.faiss").read_bytes()
    (path / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="index.faiss is corrupt or truncated"):
        EmbeddingIndex.load(path)


def test_edited_manifest_is_refused(built, tmp_path):
    path = built.save(tmp_path / "ix")
    m = json.loads((path / "manifest.json").read_text())
    m["count"] = 3
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="manifest was modified"):
        EmbeddingIndex.load(path)


def test_foreign_and_missing_folders(tmp_path):
    with pytest.raises(IndexFormatError, match="no index folder"):
        EmbeddingIndex.load(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IndexFormatError, match="not an embedkit index"):
        EmbeddingIndex.load(tmp_path / "other")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        EmbeddingIndex.load(tmp_path / "broken")


@pytest.mark.slow
def test_other_model_is_refused_unless_forced(built, tmp_path, default_model):
    path = built.save(tmp_path / "ix")
    with pytest.raises(ModelMismatchError, match="built with model"):
        EmbeddingIndex.load(path, model=default_model)
    forced = EmbeddingIndex.load(path, model=default_model, force=True)
    assert forced._model is default_model


def test_missing_model_path_at_load(built, tmp_path):
    path = built.save(tmp_path / "ix")
    with pytest.raises(EmbedkitError, match="does not exist"):
        EmbeddingIndex.load(path, model=str(tmp_path / "no-model"))


def test_crash_during_save_leaves_previous_index_intact(built, tmp_path, monkeypatch):
    path = built.save(tmp_path / "ix")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    built.add(["the cow and the horse sleep"], ["extra"])

    from embedkit.retrieval import docstore

    def boom(self, p):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(docstore.DocStore, "save", boom)
    with pytest.raises(OSError, match="simulated"):
        built.save(path)
    after = {p.name: p.read_bytes() for p in path.iterdir()}
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ix.")]  # no temp folder left behind
    monkeypatch.undo()
    assert len(EmbeddingIndex.load(path)) == len(DOCS)


def test_empty_index_and_bad_k(tiny_model):
    idx = EmbeddingIndex(tiny_model)
    with pytest.raises(EmbedkitError, match="index is empty"):
        idx.search_embeddings(rand_unit(1), 3)
    with pytest.raises(EmbedkitError, match="cannot save an empty index"):
        idx.save("unused")
    idx = EmbeddingIndex.build(["a cat", "a dog"], model=tiny_model)
    with pytest.raises(EmbedkitError, match="k must be >= 1"):
        idx.search("cat", k=0)
    with pytest.raises(EmbedkitError, match="query 0 is empty"):
        idx.search("  ")
    assert len(idx.search("cat", k=10)) == 2  # k larger than the corpus
