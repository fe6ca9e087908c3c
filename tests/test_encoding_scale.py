"""Issue 18: `--shard I/N` partitions, encoding on Ray, reading shards one at a time."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from embedkit.encoding import (
    encode_to_shards,
    encode_with_ray,
    load_shards,
    open_shards,
    parse_partition,
    partition_shards,
)
from embedkit.errors import EmbedkitError


def test_partitions_are_disjoint_and_complete():
    for n_shards in (1, 2, 5, 17, 100):
        for n in (1, 2, 3, 7, 16):
            parts = [list(partition_shards(n_shards, (i, n))) for i in range(n)]
            flat = [s for p in parts for s in p]
            assert flat == list(range(n_shards))  # disjoint, complete, in order
    assert parse_partition("2/3") == (2, 3) and parse_partition((0, 1)) == (0, 1) and parse_partition(None) is None


@pytest.mark.parametrize("bad,msg", [
    ("3/2", r"--shard 3/2: I must be in 0\.\.1 \(I counts from 0"),
    ("2/2", r"--shard 2/2: I must be in 0\.\.1"),
    ("1/0", r"--shard 1/0: N must be >= 1"),
    ("a/b", r"--shard 'a/b': expected I/N"),
    ("1", r"--shard '1': expected I/N"),
    ((True, 2), r"I and N must be whole numbers"),
])
def test_bad_partition_is_a_one_line_error(bad, msg):
    with pytest.raises(EmbedkitError, match=msg) as e:
        parse_partition(bad)
    assert "\n" not in str(e.value)


def test_partitioned_encodes_fill_one_folder_and_equal_the_plain_encode(tiny_model, isolated_cache, tmp_path):
    texts = [f"a sentence about topic {i % 7} number {i}" for i in range(23)]
    ids = [f"t{i}" for i in range(23)]
    plain = encode_to_shards(tiny_model, texts, tmp_path / "plain", ids=ids, shard_size=4, show_progress=False,
                             cache=False)
    assert plain["complete"]
    out = tmp_path / "parts"
    # three parts at the same time (threads stand in for array jobs): the manifest merges their shards
    results, errors = {}, []

    def run(i):
        try:
            results[i] = encode_to_shards(tiny_model, texts, out, ids=ids, shard_size=4, show_progress=False,
                                          cache=False, partition=f"{i}/3")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    run(1)  # one part first: the corpus is not complete yet
    assert not results[1]["complete"] and results[1]["partition"] == {"index": 1, "of": 3, "shards": [2, 4]}
    with pytest.raises(EmbedkitError, match=r"shard shard-00000\.npy is missing"):
        load_shards(out)
    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    X, got_ids = load_shards(out, return_ids=True)
    np.testing.assert_array_equal(X, load_shards(tmp_path / "plain"))
    assert got_ids == ids
    assert set(json.loads((out / "manifest.json").read_text())["shard_sha256"]) == {f"shard-{s:05d}.npy" for s in range(6)}
    # a rerun of a finished part encodes nothing
    again = encode_to_shards(tiny_model, texts, out, ids=ids, shard_size=4, show_progress=False, partition="2/3")
    assert again["resumed_shards"] == 2 and again["complete"]


def test_open_shards_reads_one_shard_at_a_time(tiny_model, isolated_cache, tmp_path):
    texts = [f"text {i}" for i in range(10)]
    encode_to_shards(tiny_model, texts, tmp_path / "e", shard_size=4, show_progress=False, cache=False)
    want = load_shards(tmp_path / "e")
    shards = open_shards(tmp_path / "e")
    assert (shards.count, shards.dim, shards.n_shards) == (10, want.shape[1], 3)
    got = np.concatenate([x for _, x in shards.iter_shards()])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(shards.read_rows([9, 0, 5]), want[[9, 0, 5]])
    with open(tmp_path / "e" / "shard-00001.npy", "r+b") as f:
        f.truncate(200)
    with pytest.raises(EmbedkitError, match=r"e/shard-00001\.npy: (truncated|holds)"):
        open_shards(tmp_path / "e")


ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'embedkit[ray]' to run the Ray tests")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_ray_encode_equals_the_plain_encode_and_resumes(tiny_model_path, tiny_model, isolated_cache, tmp_path,
                                                        local_ray, monkeypatch):
    monkeypatch.setenv("EMBEDKIT_NO_CACHE", "1")
    texts = [f"ray sentence {i} about {['cats', 'stocks', 'rivers'][i % 3]}" for i in range(30)]
    plain = encode_to_shards(tiny_model, texts, tmp_path / "plain", shard_size=8, show_progress=False, cache=False)
    out = tmp_path / "ray"
    got = encode_with_ray(tiny_model, texts, out, shard_size=8, show_progress=False, num_actors=2)
    assert got["complete"] and got["ray_shards"] == 4 and got["resumed_shards"] == 0
    diff = np.abs(load_shards(out) - load_shards(tmp_path / "plain")).max()
    assert diff <= 1e-5, diff
    assert got["model"] == plain["model"]
    (out / "shard-00002.npy").unlink()
    again = encode_with_ray(tiny_model, texts, out, shard_size=8, show_progress=False, num_actors=1)
    assert again["ray_shards"] == 1 and again["resumed_shards"] == 3
    np.testing.assert_allclose(load_shards(out), load_shards(tmp_path / "plain"), atol=1e-5)


def test_sharded_ivf_lists_built_on_ray(tiny_model, isolated_cache, tmp_path, local_ray):
    from embedkit import EmbeddingIndex
    from embedkit.retrieval.sharded import build_index_from_shards

    ids = [f"d{i}" for i in range(400)]
    texts = [f"doc {i} on {['cats', 'stocks', 'rivers', 'music'][i % 4]} {i % 13}" for i in range(400)]
    emb = tmp_path / "emb"
    encode_to_shards(tiny_model, texts, emb, ids=ids, shard_size=64, show_progress=False, cache=False)
    X = load_shards(emb)
    on_ray = build_index_from_shards(emb, tmp_path / "a", ids=ids, texts=texts, spec="binary", nlist=8, nprobe=4,
                                     ray_address="auto", model=tiny_model)
    local = build_index_from_shards(emb, tmp_path / "b", ids=ids, texts=texts, spec="binary", nlist=8, nprobe=4,
                                    model=tiny_model)
    np.testing.assert_array_equal(on_ray.search_embeddings(X[:20], 5)[1], local.search_embeddings(X[:20], 5)[1])
    assert len(EmbeddingIndex.load(tmp_path / "a")) == 400
