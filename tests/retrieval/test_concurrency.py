"""Issue 12 item 5: many searching threads and one writer on one EmbeddingIndex."""

import threading
import time

import numpy as np

from embedkit import EmbeddingIndex
from embedkit.retrieval.locking import ReadWriteLock


def rand_unit(n, d=32, seed=0):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_eight_readers_and_one_writer():
    n = 200
    X = rand_unit(n, seed=11)
    idx = EmbeddingIndex.build([f"base {i}" for i in range(n)], [f"b{i}" for i in range(n)], embeddings=X,
                               spec="binary", rescore=8)
    gone: dict[str, np.ndarray] = {}  # ids whose remove() has returned -> their vectors
    gone_lock = threading.Lock()
    errors: list[str] = []
    counts = {"searches": 0, "writes": 0}
    stop = threading.Event()

    def reader(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            with gone_lock:
                removed = dict(gone)  # snapshot taken before the search starts
            try:
                i = int(rng.integers(n))
                hits = idx.search(X[i : i + 1], k=5)[0]
                if hits[0].id != f"b{i}" or hits[0].text != f"base {i}":
                    errors.append(f"base query {i} -> {hits[0].id} {hits[0].text!r}")
                for h in hits:
                    want = f"base {h.id[1:]}" if h.id.startswith("b") else f"new {h.id[1:]}"
                    if h.text != want or h.id in removed:
                        errors.append(f"bad hit {h.id} {h.text!r} (removed: {h.id in removed})")
                if removed:
                    rid = list(removed)[int(rng.integers(len(removed)))]
                    scores, ids = idx.search_ids(removed[rid][None], 5)
                    if rid in ids[0] or any(d in removed for d in ids[0]):
                        errors.append(f"removed id returned: {ids[0]}")
                counts["searches"] += 1
            except Exception as e:  # noqa: BLE001 - every exception is a failure here
                errors.append(f"{type(e).__name__}: {e}")

    def writer():
        j = 0
        rng = np.random.default_rng(99)
        while not stop.is_set():
            try:
                V = rng.standard_normal((4, 32)).astype(np.float32)
                ids = [f"n{j + t}" for t in range(4)]
                idx.add([f"new {j + t}" for t in range(4)], ids, embeddings=V)
                if any(idx.search_ids(V, 1)[1][t][0] != ids[t] for t in range(4)):
                    errors.append("added document not found")
                idx.remove(ids)
                with gone_lock:
                    gone.update({d: v / np.linalg.norm(v) for d, v in zip(ids, V)})
                counts["writes"] += 1
                j += 4
            except Exception as e:  # noqa: BLE001
                errors.append(f"writer {type(e).__name__}: {e}")
                return

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(8)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert counts["searches"] > 50 and counts["writes"] > 5, counts
    assert len(idx) == n
    idx.check_consistency()


def test_read_write_lock_excludes_writers():
    lock = ReadWriteLock()
    inside = {"readers": 0, "writers": 0, "max_readers": 0, "bad": 0}
    guard = threading.Lock()

    def read():
        for _ in range(200):
            with lock.read():
                with guard:
                    inside["readers"] += 1
                    inside["max_readers"] = max(inside["max_readers"], inside["readers"])
                    inside["bad"] += inside["writers"] > 0
                time.sleep(0.0001)
                with guard:
                    inside["readers"] -= 1

    def write():
        for _ in range(100):
            with lock.write():
                with guard:
                    inside["writers"] += 1
                    inside["bad"] += inside["writers"] > 1 or inside["readers"] > 0
                time.sleep(0.0001)
                with guard:
                    inside["writers"] -= 1

    ts = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=write) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert inside["bad"] == 0 and inside["max_readers"] >= 1
