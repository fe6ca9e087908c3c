"""Issue 12: all-or-nothing add/remove, recoverable saves, safe output folders, paths, umask modes."""

import datetime
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from embedkit import EmbeddingIndex
from embedkit.errors import EmbedkitError, IndexStateError, OutputExistsError


def rand_unit(n, d=32, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def small(backend="flat", spec="binary", rescore=4, n=30):
    X = rand_unit(n, seed=7)
    idx = EmbeddingIndex.build([f"text {i}" for i in range(n)], [f"d{i}" for i in range(n)],
                               [{"i": i} for i in range(n)], embeddings=X, spec=spec, index_type=backend,
                               rescore=rescore, nlist=2)
    return idx, X


def state(idx):
    vecs = None if idx._rescore_vecs is None else np.asarray(idx._rescore_vecs).copy()
    return idx._code_index.ntotal, idx._keys.copy(), len(idx._docs), vecs


def assert_unchanged(idx, before, X):
    ntotal, keys, ndocs, vecs = state(idx)
    assert ntotal == before[0] and ndocs == before[2]
    np.testing.assert_array_equal(keys, before[1])
    if vecs is not None:
        np.testing.assert_array_equal(vecs, before[3])
    _, ids = idx.search_ids(X, 1)
    assert [r[0] for r in ids] == [f"d{i}" for i in range(len(X))]


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --- item 2: all-or-nothing add and remove -------------------------------------------------------

@pytest.mark.parametrize("bad", [datetime.date(2024, 5, 1), {"a", "b"}])
def test_add_with_unencodable_metadata_changes_nothing(bad, tmp_path):
    idx, X = small()
    before = state(idx)
    new = rand_unit(2, seed=8)
    with pytest.raises(EmbedkitError, match=r"metadata of document 1 \(id 'n1'\) \(key 'when'\) cannot be stored as JSON"):
        idx.add(["new 0", "new 1"], ["n0", "n1"], [{"ok": 1}, {"when": bad}], embeddings=new)
    assert_unchanged(idx, before, X)
    idx.add(["new 0", "new 1"], ["n0", "n1"], [{"ok": 1}, {"when": str(bad)}], embeddings=new)
    loaded = EmbeddingIndex.load(idx.save(tmp_path / "ix"))
    assert len(loaded) == 32 and loaded.search(new[1:], k=1)[0][0].metadata == {"when": str(bad)}


@pytest.mark.parametrize("backend", ["flat", "hnsw"])
def test_add_rolls_back_when_the_docstore_fails(backend, monkeypatch):
    from embedkit.retrieval import docstore

    idx, X = small(backend)
    before = state(idx)

    def boom(self, *a, **k):
        raise OSError("docstore write failed (simulated)")

    monkeypatch.setattr(docstore.DocStore, "add", boom)
    monkeypatch.setattr(docstore.DocStore, "insert", boom, raising=False)
    with pytest.raises(OSError, match="simulated"):
        idx.add(["x"], ["n0"], embeddings=rand_unit(1, seed=9))
    monkeypatch.undo()
    assert_unchanged(idx, before, X)
    idx.check_consistency()


def test_add_rolls_back_when_faiss_fails(monkeypatch):
    idx, X = small()
    before = state(idx)
    ci = idx._code_index
    real_add = ci.add

    def half_then_fail(codes):
        real_add(codes[:1])
        raise RuntimeError("faiss failed (simulated)")

    monkeypatch.setattr(ci, "add", half_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        idx.add(["x", "y"], ["n0", "n1"], embeddings=rand_unit(2, seed=9))
    monkeypatch.undo()
    assert_unchanged(idx, before, X)
    assert "n0" not in idx


def test_remove_rolls_back_when_the_docstore_fails(monkeypatch):
    from embedkit.retrieval import docstore

    idx, X = small()
    before = state(idx)

    def boom(self, *a, **k):
        raise OSError("docstore delete failed (simulated)")

    monkeypatch.setattr(docstore.DocStore, "delete_keys", boom)
    monkeypatch.setattr(docstore.DocStore, "delete", boom, raising=False)
    with pytest.raises(OSError, match="simulated"):
        idx.remove(["d3", "d4"])
    monkeypatch.undo()
    assert_unchanged(idx, before, X)


@pytest.mark.parametrize("backend", ["hnsw", "ivf"])
def test_remove_rolls_back_when_a_rebuild_fails(backend, monkeypatch):
    idx, X = small(backend, spec="int8", rescore=None)
    before = state(idx)
    ci = idx._code_index

    def reset_then_fail(rows):
        ci.index.reset()
        raise RuntimeError("rebuild failed (simulated)")

    monkeypatch.setattr(ci, "remove", reset_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        idx.remove(["d3"])
    assert_unchanged(idx, before, X)
    idx.check_consistency()


def test_remove_with_an_unknown_id_removes_nothing():
    idx, X = small()
    before = state(idx)
    with pytest.raises(EmbedkitError, match="unknown document ids: 'nope'"):
        idx.remove(["d1", "nope"])
    assert_unchanged(idx, before, X)


def test_save_refuses_an_inconsistent_index(tmp_path):
    idx, X = small()
    path = idx.save(tmp_path / "ix")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    idx._keys = idx._keys[:-1]  # what a half-applied write used to leave behind
    with pytest.raises(IndexStateError, match=r"inconsistent \(document counts .*'faiss': 30, 'keys': 29"):
        idx.save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


# --- item 3: recoverable swap, stale temporary folders, output folders ---------------------------

def test_load_restores_an_index_after_a_kill_between_the_renames(tmp_path):
    idx, X = small()
    path = idx.save(tmp_path / "ix")
    os.replace(path, tmp_path / f".ix.old-{dead_pid()}")  # the first rename happened, the second did not
    loaded = EmbeddingIndex.load(tmp_path / "ix")
    assert len(loaded) == 30 and (tmp_path / "ix").is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]


def test_next_save_removes_stale_temporary_folders(tmp_path):
    idx, _ = small()
    path = idx.save(tmp_path / "ix")
    stale = tmp_path / f".ix.{dead_pid()}.abc123.tmp"
    stale.mkdir()
    (stale / "index.faiss").write_bytes(b"half written")
    idx.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_save_never_replaces_what_is_not_an_index(tmp_path):
    from embedkit._io import output_kind

    idx, _ = small()
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("years of work")
    with pytest.raises(OutputExistsError, match="not empty and not an embedkit index"):
        idx.save(d)
    assert (d / "thesis.txt").read_text() == "years of work"
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    with pytest.raises(OutputExistsError, match="exists and is not a folder"):
        idx.save(f)
    assert f.read_text() == "keep me"
    path = idx.save(tmp_path / "ix")
    assert output_kind(path) == "index"
    idx.save(path)  # an embedkit index is replaced
    assert len(EmbeddingIndex.load(path)) == 30


def test_files_and_folders_follow_the_umask(tmp_path):
    idx, _ = small()
    old = os.umask(0o022)
    try:
        path = idx.save(tmp_path / "ix")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    names = sorted(p.name for p in path.iterdir())
    assert names == ["docs.sqlite", "embedkit-output.json", "index.faiss", "manifest.json", "quantizer.json",
                     "quantizer.npz", "rescore.f16.npy"]
    for p in path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name


# --- item 6: special characters in the path -----------------------------------------------------

def test_index_path_with_uri_characters(tmp_path):
    idx, X = small()
    parent = tmp_path / "dir"
    path = idx.save(parent / "my#idx?x%20")
    loaded = EmbeddingIndex.load(path)
    hits = loaded.search(X[:2], k=1)
    assert [h[0].id for h in hits] == ["d0", "d1"] and hits[0][0].text == "text 0"
    assert sorted(p.name for p in parent.iterdir()) == ["my#idx?x%20"]  # no stray 'my' file


def test_docstore_is_read_from_the_verified_file_not_a_uri_prefix(tmp_path):
    """A SQLite file at the unescaped URI's prefix ('dir/my') must not be served instead."""
    import sqlite3

    idx, X = small()
    parent = tmp_path / "dir"
    path = idx.save(parent / "my#idx")
    decoy = sqlite3.connect(parent / "my")
    decoy.execute("CREATE TABLE docs (key INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL, metadata TEXT)")
    decoy.executemany("INSERT INTO docs VALUES (?, ?, ?, NULL)", [(i, f"evil{i}", "forged") for i in range(30)])
    decoy.commit()
    decoy.close()
    hits = EmbeddingIndex.load(path).search(X[:1], k=1)[0]
    assert hits[0].id == "d0" and hits[0].text == "text 0"
