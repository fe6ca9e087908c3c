"""EmbeddingIndex API behaviour from issue 11: result order, model checks, blank documents, argument checks."""

import hashlib
import json
import logging

import numpy as np
import pytest

from embedkit import EmbeddingIndex
from embedkit.errors import EmbedkitError, ModelMismatchError


def rand_unit(n, d=32, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_results_are_scores_then_rows():
    X = rand_unit(50)
    idx = EmbeddingIndex.build([f"t{i}" for i in range(50)], embeddings=X, spec="binary", rescore=4)
    scores, rows = idx.search_embeddings(X[:3], 4)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    assert rows[:, 0].tolist() == [0, 1, 2]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)
    scores2, ids = idx.search_ids(X[:3], 4)
    np.testing.assert_array_equal(scores, scores2)
    assert [r[0] for r in ids] == ["0", "1", "2"]


def test_rescoring_matches_the_shared_rescore_function():
    from embedkit.compression.rescore import rescore

    X, Q = rand_unit(120, seed=1), rand_unit(7, seed=2)
    idx = EmbeddingIndex.build([f"t{i}" for i in range(120)], embeddings=X, spec="binary", rescore=3)
    _, cand = idx._code_index.search(idx.compression.transform(Q), 15)
    want_s, want_r = rescore(Q, idx._rescore_vecs, cand, 5)
    got_s, got_r = idx.search_embeddings(Q, 5)
    np.testing.assert_array_equal(got_r, want_r)
    np.testing.assert_array_equal(got_s, want_s)


def test_force_applies_to_the_recorded_model_too(tmp_path, caplog):
    """load(path, force=True) without a model must not refuse the recorded model later."""
    from embedkit import load_encoder
    from embedkit.testing import make_tiny_model

    mpath = make_tiny_model(tmp_path / "m", seed=0)
    model = load_encoder(mpath)
    idx = EmbeddingIndex.build(["the cat and the kitten", "stock price fell"], ["a", "b"], model=model,
                               show_progress=False)
    ipath = idx.save(tmp_path / "ix")
    import shutil

    shutil.rmtree(mpath)
    make_tiny_model(mpath, seed=1)  # different weights at the recorded path
    with pytest.raises(ModelMismatchError, match="is not the one this index was built with"):
        EmbeddingIndex.load(ipath).search("cat")
    forced = EmbeddingIndex.load(ipath, force=True)
    with caplog.at_level(logging.WARNING, logger="embedkit.retrieval.index"):
        hits = forced.search("the cat", k=2)
    assert len(hits) == 2 and "querying anyway (force)" in caplog.text


def test_index_from_embeddings_accepts_an_explicit_model_later(tmp_path, tiny_model, tiny_model_path, caplog):
    """An index built from embeddings= with a model path (or None) records no fingerprint; an explicit
    model given at load is then accepted, not refused."""
    X = tiny_model.encode(["the cat and the kitten", "stock price fell"], convert_to_numpy=True)
    for model in (tiny_model_path, None):
        idx = EmbeddingIndex.build(["the cat and the kitten", "stock price fell"], ["a", "b"], model=model, embeddings=X)
        path = idx.save(tmp_path / f"ix-{model is None}")
        with caplog.at_level(logging.WARNING, logger="embedkit.retrieval.index"):
            loaded = EmbeddingIndex.load(path, model=tiny_model)
        assert "does not record the fingerprint" in caplog.text
        assert loaded.search("the cat and the kitten", k=1)[0].id == "a"
        assert loaded.model is tiny_model


def test_blank_documents_are_skipped_and_recorded(tmp_path, caplog):
    texts = ["doc a", "", "doc c", "  \u200b ", "doc e"]
    ids = ["a", "b", "c", "d", "e"]
    X = rand_unit(5, seed=3)
    with caplog.at_level(logging.WARNING):
        idx = EmbeddingIndex.build(texts, ids, [{"i": i} for i in range(5)], embeddings=X)
    assert "skipped 2 empty or whitespace-only documents (ids: 'b', 'd')" in caplog.text
    assert len(idx) == 3 and idx.skipped_count == 2 and idx.skipped_ids == ["b", "d"]
    _, found = idx.search_ids(X[[0, 2, 4]], 1)  # the kept documents keep their own embeddings
    assert [f[0] for f in found] == ["a", "c", "e"]
    assert "b" not in idx and "a" in idx
    path = idx.save(tmp_path / "ix")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["skipped_empty"] == {"count": 2, "ids": ["b", "d"]} and manifest["count"] == 3
    loaded = EmbeddingIndex.load(path)
    assert loaded.skipped_count == 2 and loaded.skipped_ids == ["b", "d"]
    loaded.add(["now it has text"], ["b"], embeddings=rand_unit(1, seed=4))
    assert loaded.skipped_count == 1 and loaded.skipped_ids == ["d"]
    with pytest.raises(EmbedkitError, match=r"document 1 \(id 'b'\) is empty or whitespace-only"):
        EmbeddingIndex.build(texts, ids, embeddings=X, on_empty="error")


def test_evaluation_counts_skipped_documents_as_not_retrievable(caplog):
    from embedkit.evaluation.retrieval import evaluate_index

    X = rand_unit(6, seed=5)
    texts = ["t0", "t1", "   ", "t3", "t4", "t5"]
    ids = [f"d{i}" for i in range(6)]
    queries = {"q0": "x", "q1": "y"}
    qrels = {"q0": {"d0": 1, "d2": 1}, "q1": {"d3": 1}}
    Q = X[[0, 3]]
    with_blank = EmbeddingIndex.build(texts, ids, embeddings=X)
    without = EmbeddingIndex.build([t for i, t in enumerate(texts) if i != 2], [d for i, d in enumerate(ids) if i != 2],
                                   embeddings=np.delete(X, 2, axis=0))
    a = evaluate_index(with_blank, queries, qrels, query_embeddings=Q)
    b = evaluate_index(without, queries, qrels, query_embeddings=Q)
    for key in ("ndcg@10", "recall@100", "mrr@10"):
        assert a[key] == pytest.approx(b[key])
    assert a["recall@100"] == pytest.approx(0.75)  # d2 is judged relevant and cannot be retrieved
    assert a["judged_documents"] == 3 and a["judged_documents_in_index"] == 2 and a["skipped_empty_documents"] == 1
    assert a["no_judged_documents_in_index"] is False
    with caplog.at_level(logging.WARNING, logger="embedkit.evaluation.retrieval"):
        c = evaluate_index(with_blank, queries, {"q0": {"zz": 1}, "q1": {"yy": 2}}, query_embeddings=Q)
    assert c["no_judged_documents_in_index"] is True and c["ndcg@10"] == 0.0
    assert "none of the 2 relevant judged documents is in the index" in caplog.text


def test_repr():
    idx = EmbeddingIndex.build(["a", "b", "c"], embeddings=rand_unit(3), spec="int8", rescore=2)
    assert repr(idx) == ("EmbeddingIndex(count=3, dim=32, spec='int8', index_type='flat', rescore=2, "
                         "model='default (all-MiniLM-L6-v2)')")
    assert repr(EmbeddingIndex(spec="binary", index_type="hnsw")).startswith("EmbeddingIndex(count=0, dim=None, spec='binary'")


def test_one_line_argument_errors():
    X = rand_unit(30)
    idx = EmbeddingIndex.build([f"t{i}" for i in range(30)], embeddings=X)
    for bad in (2.7, True, "3"):
        with pytest.raises(EmbedkitError, match=f"k must be a whole number, got {bad!r}"):
            idx.search_embeddings(X[:1], bad)
        with pytest.raises(EmbedkitError, match="k must be a whole number"):
            idx.search(X[:1], k=bad)
    with pytest.raises(EmbedkitError, match="k must be >= 1, got 0"):
        idx.search_ids(X[:1], 0)
    with pytest.raises(EmbedkitError, match=r"rescore \(oversampling factor\) must be >= 1, got 0"):
        EmbeddingIndex(rescore=0)
    with pytest.raises(EmbedkitError, match="rescore .* must be a whole number, got 2.5"):
        EmbeddingIndex(rescore=2.5)
    with pytest.raises(EmbedkitError, match="nlist must be >= 1, got 0"):
        EmbeddingIndex(index_type="ivf", nlist=0)
    with pytest.raises(EmbedkitError, match="unknown index_type 'annoy'; choose one of flat, hnsw, ivf"):
        EmbeddingIndex(index_type="annoy")
    with pytest.raises(EmbedkitError, match="nlist 1000 is larger than the 30 documents to index; use nlist <= 30"):
        EmbeddingIndex.build([f"t{i}" for i in range(30)], embeddings=X, index_type="ivf", nlist=1000)


def test_manifest_digest_is_the_documented_one(tmp_path):
    """The manifest's self-checksum: sha256 of its sorted JSON without the checksum field."""
    idx = EmbeddingIndex.build(["a", "b"], embeddings=rand_unit(2))
    m = json.loads((idx.save(tmp_path / "ix") / "manifest.json").read_text())
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    assert m["manifest_sha256"] == hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def test_rescoring_vectors_are_stored_at_the_spec_dimension(tmp_path):
    """mrl:16,binary + rescore keeps 16-d float16 vectors (32 B), not the 32-d input (64 B), and rescored
    scores are inner products of the truncated, renormalised vectors."""
    import numpy as np

    from embedkit.retrieval.index import EmbeddingIndex

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 32)).astype(np.float32)
    idx = EmbeddingIndex.build([f"doc {i}" for i in range(60)], [f"d{i}" for i in range(60)], spec="mrl:16,binary",
                               rescore=4, embeddings=X)
    assert idx.rescore_dim == 16 and idx.rescore_bytes_per_vector == 32 and idx.bytes_per_vector == 2
    idx.save(tmp_path / "i")
    assert np.load(tmp_path / "i" / "rescore.f16.npy").shape == (60, 16)
    q = rng.standard_normal((1, 32)).astype(np.float32)
    scores, rows = idx.search_embeddings(q, 5)

    def t(v):
        v = v[:, :16] / np.linalg.norm(v[:, :16], axis=1, keepdims=True)
        return v

    want = (t(X).astype(np.float16).astype(np.float32) @ t(q / np.linalg.norm(q))[0])[rows[0]]
    np.testing.assert_allclose(scores[0], want, rtol=1e-4, atol=1e-4)
    again = EmbeddingIndex.load(tmp_path / "i")
    np.testing.assert_array_equal(again.search_embeddings(q, 5)[1], rows)


def test_an_explicit_small_nprobe_is_used_as_given_not_raised_to_a_floor():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 16)).astype(np.float32)
    idx = EmbeddingIndex.build([f"t{i}" for i in range(600)], embeddings=X, index_type="ivf", nlist=24, nprobe=2)
    idx.search_embeddings(X[:3], 5)
    assert idx._faiss_ivf().nprobe == 2  # was silently raised to 16 at search time
    one, _ = idx.search_embeddings(X[:50], 10)
    idx.nprobe = 24
    every, _ = idx.search_embeddings(X[:50], 10)
    assert (one <= every + 1e-6).all() and (one < every - 1e-6).any()  # fewer lists probed: some worse hits


@pytest.mark.parametrize("layout", ["memory", "disk"])
def test_use_model_attaches_a_checked_encoder_to_a_loaded_index(tmp_path, tiny_model, tiny_model_path, layout,
                                                                 caplog):
    """IndexBase.use_model (issue 23): a loaded index takes its encoder (object or path) after the
    fingerprint check, for both formats; another model is refused unless forced; None is refused."""
    from embedkit.testing import make_tiny_model

    texts = ["the cat and the kitten", "stock price fell"]
    idx = EmbeddingIndex.build(texts, ["a", "b"], model=tiny_model, show_progress=False)
    path = idx.save(tmp_path / "ix", layout=None if layout == "memory" else "disk")
    loaded = EmbeddingIndex.load(path)
    assert type(loaded).__name__ == {"memory": "EmbeddingIndex", "disk": "DiskIndex"}[layout]
    assert loaded.use_model(tiny_model) is None and loaded.model is tiny_model
    assert loaded.search("the cat and the kitten", k=1)[0].id == "a"
    by_path = EmbeddingIndex.load(path)
    by_path.use_model(tiny_model_path)
    assert by_path.model is not tiny_model and by_path.search("stock price fell", k=1)[0].id == "b"

    other = make_tiny_model(tmp_path / "other", seed=7)
    fresh = EmbeddingIndex.load(path)
    with pytest.raises(ModelMismatchError, match=r"^this index was built with model .* the given model has "
                                                 r"fingerprint .*\. Use the original model, or force=True"):
        fresh.use_model(other)
    with caplog.at_level(logging.WARNING):
        fresh.use_model(other, force=True)
    assert "querying anyway (force)" in caplog.text and fresh.model_fingerprint == idx.model_fingerprint
    with pytest.raises(EmbedkitError, match="^use_model: no model given"):
        fresh.use_model(None)
