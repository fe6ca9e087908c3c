"""Issue 18: the disk-backed index (format embedkit.index/2), streamed IVF builds from shards, nprobe/efSearch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from embedkit import EmbeddingIndex
from embedkit.errors import EmbedkitError, IndexFormatError
from embedkit.retrieval.index import DEFAULT_EF_SEARCH, default_nprobe
from embedkit.retrieval.ondisk import DiskIndex

REPO = Path(__file__).resolve().parents[2]


def rand_unit(n, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((12, d))
    X = centers[rng.integers(12, size=n)] + 0.6 * rng.standard_normal((n, d))
    X = X.astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def write_shards(folder: Path, X: np.ndarray, ids, shard_size=100, dims=None):
    """A shards folder in `embedkit encode`'s format (format 2: manifest with shard checksums + ids.json)."""
    from embedkit._io import mark_output, sha256_file
    from embedkit.encoding import FORMAT, _texts_digest

    folder.mkdir(parents=True)
    mark_output(folder, "shards")
    sums = {}
    for s in range(-(-len(X) // shard_size)):
        name = f"shard-{s:05d}.npy"
        part = X[s * shard_size:(s + 1) * shard_size]
        if dims and s in dims:
            part = np.zeros((len(part), dims[s]), np.float32) + 0.1
        np.save(folder / name, part)
        sums[name] = sha256_file(folder / name)
    (folder / "ids.json").write_text(json.dumps(list(ids)))
    (folder / "manifest.json").write_text(json.dumps({
        "format": FORMAT, "model": {"source": "test", "fingerprint": None}, "texts_sha256": "x",
        "ids_sha256": _texts_digest(list(ids)), "count": len(X), "shard_size": shard_size, "dim": X.shape[1],
        "shard_sha256": sums}))
    return folder


@pytest.fixture()
def corpus():
    n = 600
    X = rand_unit(n, seed=1)
    ids = [f"d{i}" for i in range(n)]
    texts = [f"document number {i}" for i in range(n)]
    return X, ids, texts


def build(tmp_path, corpus, spec="float", rescore=None, name="idx", **kw):
    from embedkit.retrieval.sharded import build_index_from_shards

    X, ids, texts = corpus
    emb = tmp_path / "emb"
    if not emb.exists():
        write_shards(emb, X, ids)
    kw.setdefault("nlist", 8)
    return build_index_from_shards(emb, tmp_path / name, ids=ids, texts=texts, spec=spec, rescore=rescore, **kw)


@pytest.mark.parametrize("spec,rescore", [("float", None), ("binary", 4), ("int8", None)])
def test_sharded_ivf_build_equals_the_in_memory_build(tmp_path, corpus, spec, rescore):
    X, ids, texts = corpus
    # nprobe 18 of 24 lists: above the floor of 16 the in-memory search applies, below all lists
    disk = build(tmp_path, corpus, spec, rescore, sample_size=len(X), nlist=24, nprobe=18)
    mem = EmbeddingIndex.build(texts, ids, embeddings=X, spec=spec, index_type="ivf", rescore=rescore, nlist=24,
                               nprobe=18)
    assert isinstance(disk, DiskIndex) and len(disk) == len(mem) == len(X)
    assert (tmp_path / "idx" / "seg-00000.ivfdata").stat().st_size > 0
    Q = rand_unit(40, seed=7)
    s1, r1 = disk.search_embeddings(Q, 10)
    s2, r2 = mem.search_embeddings(Q, 10)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert [h.id for h in disk.search(Q[:1], k=5)[0]] == [h.id for h in mem.search(Q[:1], k=5)[0]]
    assert disk.search(Q[:1], k=1)[0][0].text.startswith("document number")


def test_nprobe_and_ef_search_arguments_defaults_and_setting_on_a_loaded_index(tmp_path, corpus):
    X, ids, texts = corpus
    assert default_nprobe(8) == 8 and default_nprobe(128) == 51 and default_nprobe(507) == 134
    mem = EmbeddingIndex.build(texts, ids, embeddings=X, index_type="ivf", nlist=16)
    assert mem.nprobe == default_nprobe(16) and mem.ef_search is None
    mem.nprobe = 2
    assert mem._faiss_ivf().nprobe == 2
    with pytest.raises(EmbedkitError, match=r"nprobe \(IVF lists per query, --nprobe\) must be >= 1, got 0"):
        mem.nprobe = 0
    with pytest.raises(EmbedkitError, match="nprobe"):
        EmbeddingIndex(index_type="ivf", nprobe=True)
    mem.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["nprobe"] == 2
    loaded = EmbeddingIndex.load(tmp_path / "m")
    assert loaded.nprobe == 2 and loaded._faiss_ivf().nprobe == 2
    loaded.nprobe = 16  # every list: exact over the codes
    s, r = loaded.search_embeddings(X[:5], 1)
    assert list(r[:, 0]) == [0, 1, 2, 3, 4]
    h = EmbeddingIndex.build(texts, ids, embeddings=X, index_type="hnsw", ef_search=40)
    assert h.ef_search == 40
    assert EmbeddingIndex.build(texts[:50], ids[:50], embeddings=X[:50], index_type="hnsw").ef_search == DEFAULT_EF_SEARCH
    disk = build(tmp_path, corpus, nprobe=3)
    assert disk.nprobe == 3
    disk.nprobe = 8
    assert EmbeddingIndex.load(tmp_path / "idx").nprobe == 3  # not saved yet
    disk.save(tmp_path / "idx")
    assert EmbeddingIndex.load(tmp_path / "idx").nprobe == 8


def test_add_remove_and_incremental_save_write_only_what_changed(tmp_path, corpus):
    X, ids, texts = corpus
    build(tmp_path, corpus, "binary", 4)
    folder = tmp_path / "idx"
    base = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("seg-00000.*")}
    idx = EmbeddingIndex.load(folder)
    V = rand_unit(5, seed=9)
    idx.add([f"new {i}" for i in range(5)], [f"n{i}" for i in range(5)], embeddings=V)
    idx.remove(["d3", "n1"])
    assert len(idx) == 603 and "d3" not in idx and "n1" not in idx and "n2" in idx
    assert idx.search(V[2:3], k=1)[0][0].id == "n2"
    idx.save(folder)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("seg-00000.*")}
    assert after == base  # the big segment was not rewritten
    names = sorted(p.name for p in folder.iterdir())
    assert "seg-00001.faiss" in names and "removed-00001.npy" in names
    again = EmbeddingIndex.load(folder, verify="full")
    assert len(again) == 603 and "d3" not in again and again.search(V[4:5], k=1)[0][0].id == "n4"
    assert all(h.id not in ("d3", "n1") for h in again.search(X[3:4], k=20)[0])
    # a second add + save: another segment; the tombstones file is replaced, the old one deleted
    again.add(["more"], ["m0"], embeddings=rand_unit(1, seed=3))
    again.remove(["d4"])
    again.save(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert "removed-00001.npy" not in names and "removed-00002.npy" in names and "seg-00002.faiss" in names
    last = EmbeddingIndex.load(folder)
    assert len(last) == 603 and "m0" in last and "d4" not in last
    # re-adding a removed id gives a new document
    last.add(["d3 again"], ["d3"], embeddings=X[3:4])
    assert last.search(X[3:4], k=1)[0][0].text == "d3 again"
    # saving elsewhere writes a full copy
    last.save(tmp_path / "copy")
    assert len(EmbeddingIndex.load(tmp_path / "copy", verify="full")) == 604


def test_in_memory_index_saved_in_the_disk_layout(tmp_path, corpus):
    X, ids, texts = corpus
    for backend, spec in [("flat", "f16"), ("hnsw", "float"), ("ivf", "binary")]:
        mem = EmbeddingIndex.build(texts, ids, [{"i": i} for i in range(len(X))], embeddings=X, spec=spec,
                                   index_type=backend, rescore=2, nlist=8, nprobe=8)
        mem.remove(["d0"])
        mem.save(tmp_path / backend, layout="disk")
        disk = EmbeddingIndex.load(tmp_path / backend)
        assert isinstance(disk, DiskIndex) and len(disk) == len(mem)
        s1, r1 = disk.search_embeddings(X[:20], 5)
        s2, r2 = mem.search_embeddings(X[:20], 5)
        np.testing.assert_array_equal(r1, r2)
        hit = disk.search(X[7:8], k=1)[0][0]
        assert (hit.id, hit.text, hit.metadata) == ("d7", "document number 7", {"i": 7})
    with pytest.raises(EmbedkitError, match="layout must be 'memory' or 'disk'"):
        mem.save(tmp_path / "x", layout="mmap")


def test_docstore_is_queried_on_disk_with_bounded_rss(tmp_path):
    """Documents of 60 MB stay on disk: loading and searching adds far less than that to RSS."""
    n, d = 3000, 32
    X = rand_unit(n, d, seed=2)
    texts = [f"doc {i} " + "lorem ipsum dolor sit amet " * 740 for i in range(n)]  # ~20 kB each
    mem = EmbeddingIndex.build(texts, [str(i) for i in range(n)], embeddings=X, index_type="ivf", nlist=16, rescore=2)
    mem.save(tmp_path / "big", layout="disk")
    del mem, texts
    assert (tmp_path / "big" / "seg-00001.sqlite").stat().st_size > 55e6
    script = textwrap.dedent(f"""
        import numpy as np, resource
        from embedkit import EmbeddingIndex
        import embedkit.retrieval.ondisk, faiss
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
        X = np.load({str(tmp_path / 'q.npy')!r})
        before = rss()
        idx = EmbeddingIndex.load({str(tmp_path / 'big')!r})
        loaded = rss()
        for i in range(30):
            hits = idx.search(X[i:i+1], k=10)[0]
            assert hits[0].id == str(i) and hits[0].text.startswith(f"doc {{i}} ")
        print(loaded - before, rss() - before)
    """)
    np.save(tmp_path / "q.npy", X[:30])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    at_load, after = map(int, out.stdout.split())
    assert at_load < 8e6, at_load
    assert after < 20e6, after  # 30 searches x 10 hits of 20 kB, never the 60 MB docstore


def test_bad_shards_give_one_line_errors_naming_the_file(tmp_path, corpus):
    from embedkit.retrieval.sharded import build_index_from_shards

    X, ids, texts = corpus
    emb = write_shards(tmp_path / "dims", X, ids, dims={3: 16})
    with pytest.raises(EmbedkitError, match=r"dims/shard-00003\.npy: 16-d vectors, but shard-00000\.npy holds 32-d") as e:
        build_index_from_shards(emb, tmp_path / "o", ids=ids, texts=texts)
    assert "\n" not in str(e.value)
    emb = write_shards(tmp_path / "missing", X, ids)
    (emb / "shard-00002.npy").unlink()
    with pytest.raises(EmbedkitError, match=r"missing/shard-00002\.npy: shard missing \(6 of 6 done\)"):
        build_index_from_shards(emb, tmp_path / "o", ids=ids, texts=texts)
    emb = write_shards(tmp_path / "ok", X, ids)
    wrong = list(ids)
    wrong[5] = "zzz"
    with pytest.raises(EmbedkitError, match=r"ok/ids\.json: row 5 is id 'd5' but corpus\.jsonl has 'zzz' there"):
        build_index_from_shards(emb, tmp_path / "o", ids=wrong, texts=texts, corpus_name="corpus.jsonl")
    with pytest.raises(EmbedkitError, match=r"ok/ids\.json: 600 embeddings but the corpus has 599 documents"):
        build_index_from_shards(emb, tmp_path / "o", ids=ids[:-1], texts=texts[:-1])
    data = bytearray((emb / "shard-00001.npy").read_bytes())
    data[-3] ^= 0x10
    (emb / "shard-00001.npy").write_bytes(bytes(data))
    with pytest.raises(EmbedkitError, match=r"ok/shard-00001\.npy: checksum mismatch"):
        build_index_from_shards(emb, tmp_path / "o", ids=ids, texts=texts)
    with pytest.raises(EmbedkitError, match="no embeddings folder"):
        build_index_from_shards(tmp_path / "nothing", tmp_path / "o", ids=ids, texts=texts)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def _jsonl(path: Path, ids, texts) -> Path:
    path.write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in zip(ids, texts)))
    return path


def test_a_corpus_file_is_streamed_not_read_whole_and_gives_the_same_index(tmp_path, corpus, monkeypatch):
    import embedkit.data
    from embedkit.retrieval.sharded import build_command

    X, ids, texts = corpus
    emb = write_shards(tmp_path / "emb", X, ids)
    path = _jsonl(tmp_path / "corpus.jsonl", ids, texts)

    def whole(*a, **k):
        raise AssertionError("read_corpus holds the whole corpus in memory")

    monkeypatch.setattr(embedkit.data, "read_corpus", whole)
    summary = build_command(emb, path, tmp_path / "streamed", spec="binary", rescore=4, nlist=8)
    assert summary["documents"] == len(X)
    monkeypatch.undo()
    mem = build(tmp_path, corpus, "binary", 4, name="lists")
    streamed = EmbeddingIndex.load(tmp_path / "streamed")
    Q = rand_unit(20, seed=3)
    a, b = streamed.search(Q, k=5), mem.search(Q, k=5)
    assert [[(h.id, h.text) for h in r] for r in a] == [[(h.id, h.text) for h in r] for r in b]
    assert a[0][0].text.startswith("document number")


def test_a_streamed_corpus_that_does_not_match_the_shards_is_refused_naming_the_line(tmp_path, corpus):
    from embedkit.retrieval.sharded import build_index_from_shards

    X, ids, texts = corpus
    emb = write_shards(tmp_path / "emb", X, ids)
    wrong = list(ids)
    wrong[7] = "zzz"
    with pytest.raises(EmbedkitError, match=r"emb/ids\.json: row 7 is id 'd7' but .*c1\.jsonl has 'zzz' there"):
        build_index_from_shards(emb, tmp_path / "o", corpus=_jsonl(tmp_path / "c1.jsonl", wrong, texts))
    with pytest.raises(EmbedkitError, match=r"600 embeddings but .*c2\.jsonl has 599 documents"):
        build_index_from_shards(emb, tmp_path / "o", corpus=_jsonl(tmp_path / "c2.jsonl", ids[:-1], texts[:-1]))
    blank = list(texts)
    blank[3] = "  "
    with pytest.raises(EmbedkitError, match=r"^c3\.jsonl:4: document 'd3' is blank"):
        build_index_from_shards(emb, tmp_path / "o", corpus=_jsonl(tmp_path / "c3.jsonl", ids, blank))
    with pytest.raises(EmbedkitError, match="either corpus= .* or ids= and texts="):
        build_index_from_shards(emb, tmp_path / "o", corpus=tmp_path / "c1.jsonl", ids=ids, texts=texts)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_disk_manifest_is_checked(tmp_path, corpus):
    from embedkit.retrieval.manifest import manifest_digest

    build(tmp_path, corpus, "binary", 2)
    folder = tmp_path / "idx"
    mpath = folder / "manifest.json"
    good = json.loads(mpath.read_text())

    def forged(change):
        m = json.loads(json.dumps(good))
        change(m)
        m["manifest_sha256"] = manifest_digest(m)
        mpath.write_text(json.dumps(m))

    forged(lambda m: m["segments"][0].update(name="../../etc"))
    with pytest.raises(IndexFormatError, match="field 'segments' must be segments"):
        EmbeddingIndex.load(folder)
    forged(lambda m: m["segments"][0].update(count=599))
    with pytest.raises(IndexFormatError, match="field 'count'"):
        EmbeddingIndex.load(folder)
    mpath.write_text(json.dumps(good))
    with open(folder / "seg-00000.ivfdata", "r+b") as f:
        f.truncate(100)
    with pytest.raises(IndexFormatError, match=r"seg-00000\.ivfdata is corrupt or truncated"):
        EmbeddingIndex.load(folder)


def test_concurrent_searches_during_adds_and_removes(tmp_path, corpus):
    X, ids, texts = corpus
    idx = build(tmp_path, corpus, "binary", 4, nprobe=8)
    errors, stop = [], threading.Event()
    gone: set[str] = set()

    def reader(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            removed = set(gone)
            i = int(rng.integers(len(X)))
            try:
                hits = idx.search(X[i:i + 1], k=5)[0]
                if any(h.id in removed for h in hits):
                    errors.append("removed id returned")
                if f"d{i}" not in removed and hits[0].id != f"d{i}":
                    errors.append(f"query {i} -> {hits[0].id}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        for j in range(15):
            idx.add([f"x{j}"], [f"x{j}"], embeddings=rand_unit(1, seed=100 + j))
            idx.remove([f"d{j * 7}"])
            gone.add(f"d{j * 7}")
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []


def _run_and_kill(script: str, ready: Path, tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode()[-2000:])
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_during_a_shard_build_leaves_the_previous_index(tmp_path, corpus):
    X, ids, texts = corpus
    build(tmp_path, corpus, "binary", 2, nprobe=8)
    folder = tmp_path / "idx"
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    ready = tmp_path / "ready"
    _run_and_kill(f"""
        import json, time, pathlib
        import embedkit.retrieval.lists as od
        from embedkit.retrieval.sharded import build_index_from_shards
        real = od.write_shard_lists
        def slow(*a, **k):
            n = real(*a, **k)
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(60)
        od.write_shard_lists = slow
        ids = json.loads(pathlib.Path({str(tmp_path / 'ids.json')!r}).read_text())
        build_index_from_shards({str(tmp_path / 'emb')!r}, {str(folder)!r}, ids=ids, texts=[f"t {{i}}" for i in ids],
                                spec="binary", nlist=8, overwrite=True)
    """, ready, tmp_path)
    old = EmbeddingIndex.load(folder)
    assert len(old) == 600 and old.search(X[:1], k=1)[0][0].text == "document number 0"
    rebuilt = build(tmp_path, corpus, "float", None, overwrite=True)
    assert rebuilt.compression.spec == "float" and len(EmbeddingIndex.load(folder)) == 600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx")]


def test_kill_during_an_incremental_save_leaves_the_previous_index(tmp_path, corpus):
    X, ids, texts = corpus
    build(tmp_path, corpus, "int8", 2, nprobe=8)
    folder = tmp_path / "idx"
    ready = tmp_path / "ready"
    np.save(tmp_path / "v.npy", rand_unit(3, seed=5))
    _run_and_kill(f"""
        import time, pathlib, numpy as np
        import embedkit.retrieval.ondisk as od
        from embedkit import EmbeddingIndex
        real = od.write_manifest
        def slow(*a, **k):
            pathlib.Path({str(ready)!r}).touch()
            time.sleep(60)
        od.write_manifest = slow
        idx = EmbeddingIndex.load({str(folder)!r})
        idx.add(["a", "b", "c"], ["n0", "n1", "n2"], embeddings=np.load({str(tmp_path / 'v.npy')!r}))
        idx.remove(["d1"])
        idx.save({str(folder)!r})
    """, ready, tmp_path)
    assert (folder / "seg-00001.faiss").exists()  # written, but no manifest refers to it
    old = EmbeddingIndex.load(folder, verify="full")
    assert len(old) == 600 and "n0" not in old and "d1" in old
    old.add(["a2"], ["n9"], embeddings=rand_unit(1, seed=6))
    old.save(folder)
    new = EmbeddingIndex.load(folder, verify="full")
    assert len(new) == 601 and "n9" in new and "n0" not in new
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_disk_layout_refuses_own_search_quantizers_by_the_one_list(monkeypatch):
    """DiskIndex refuses a quantizer named in compression.spec.OWN_SEARCH (issue 23: no list of its
    own), naming the quantizers FAISS holds in registry order."""
    with pytest.raises(EmbedkitError) as e:
        DiskIndex(None, "mrl:16,bebr:2")._proto()
    assert str(e.value) == ("spec 'mrl:16,bebr:2' has its own search structure; the disk-backed layout needs a spec "
                            "whose codes FAISS holds (float, f16, int8, binary, lsh, itq, pq, opq, rabitq)")
    monkeypatch.setattr("embedkit.compression.spec.OWN_SEARCH", frozenset({"bebr", "lsh"}))
    with pytest.raises(EmbedkitError, match=r"^spec 'lsh:64' has its own search structure"):
        DiskIndex(None, "lsh:64")._proto()
