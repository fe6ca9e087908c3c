"""Durable writes: the write log, replay over the last snapshot, snapshots, and a real kill -9."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from serve_helpers import AUTH, DOCS, TOKEN, free_port, make_service, start_server, wait_healthy

from embedkit.errors import WriteLogError
from embedkit.serve.writelog import LogRecord, WriteLog, log_path_for


def _add_record(i: int, dim: int = 4) -> LogRecord:
    return LogRecord("add", [f"d{i}"], [f"text {i}"], [{"i": i}], np.full((1, dim), i, dtype=np.float32))


# --- the log itself --------------------------------------------------------------------------------------

def test_log_round_trip_keeps_vectors_exactly(tmp_path):
    path = tmp_path / "x.wal"
    X = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with WriteLog(path) as log:
        log.append(LogRecord("add", ["a", "b", "c"], ["ta", "tb", "tc"], [None, {"k": [1]}, None], X))
        log.append(LogRecord("remove", ["b"]))
        assert log.records == 2
    with WriteLog(path) as log:
        recs = list(log.read())
    assert [r.op for r in recs] == ["add", "remove"]
    assert recs[0].ids == ["a", "b", "c"] and recs[0].metadata == [None, {"k": [1]}, None]
    np.testing.assert_array_equal(recs[0].vectors, X)
    assert recs[1].ids == ["b"]


def test_torn_last_record_is_cut(tmp_path, caplog):
    path = tmp_path / "x.wal"
    with WriteLog(path) as log:
        for i in range(3):
            log.append(_add_record(i))
    good = path.read_bytes()
    with open(path, "ab") as f:
        f.write(good.splitlines(keepends=True)[0][:30])  # a half-written append (killed mid-write)
    with WriteLog(path) as log:
        assert [r.ids[0] for r in log.read()] == ["d0", "d1", "d2"]
        assert log.records == 3
    assert path.read_bytes() == good
    # a complete last line with a bad checksum (power loss) is also a torn append
    lines = good.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2].replace(b"text 2", b"text X"))
    with WriteLog(path) as log:
        assert [r.ids[0] for r in log.read()] == ["d0", "d1"]


def test_damaged_record_before_the_end_refuses(tmp_path):
    path = tmp_path / "x.wal"
    with WriteLog(path) as log:
        for i in range(3):
            log.append(_add_record(i))
    data = bytearray(path.read_bytes())
    data[data.index(b"text 0")] = ord("T")
    path.write_bytes(bytes(data))
    with WriteLog(path) as log, pytest.raises(WriteLogError, match=r"x\.wal:1: damaged write-log record"):
        list(log.read())


def test_one_server_per_log(tmp_path):
    path = tmp_path / "x.wal"
    with WriteLog(path):
        with pytest.raises(WriteLogError, match="another `embedkit serve`"):
            WriteLog(path)
    WriteLog(path).close()  # released


def test_truncate_to_undoes_the_last_append(tmp_path):
    path = tmp_path / "x.wal"
    with WriteLog(path) as log:
        log.append(_add_record(0))
        off = log.append(_add_record(1))
        log.truncate_to(off)
        assert log.records == 1
    with WriteLog(path) as log:
        assert [r.ids for r in log.read()] == [["d0"]]


# --- replay over the snapshot -------------------------------------------------------------------------------

def _crash(svc) -> None:
    """Stop a service the way kill -9 would: no snapshot, no clean close (threads stopped, lock released)."""
    svc._closed = True
    svc._stop.set()
    svc._wake.set()
    svc._snapshotter.join(5)
    svc.batcher.close()
    svc.log.close()


def test_replay_after_a_crash_restores_acknowledged_writes(index_dir, tiny_model):
    svc = make_service(index_dir, tiny_model)
    assert svc.add_documents(["n1", "n2"], ["the horse ran", "the cow ate"], [{"a": 1}, None]) == []
    assert svc.remove_document("cat") is True
    assert svc.add_documents(["cat"], ["a new cat text"], [None]) == []  # same id again after removal
    assert svc.remove_document("n2") is True
    _crash(svc)
    assert log_path_for(index_dir).stat().st_size > 0

    svc2 = make_service(index_dir, tiny_model)
    try:
        assert svc2.replayed == 4
        assert svc2.log.records == 0  # replayed, then snapshotted
        assert svc2.get_document("n1").metadata == {"a": 1}
        assert svc2.get_document("n2") is None
        assert svc2.get_document("cat").text == "a new cat text"
        assert len(svc2.index) == len(DOCS) + 1
        hits = svc2.search(["the horse ran"], k=1)[0]
        assert hits[0].id == "n1"
    finally:
        svc2.close()


def test_replay_is_idempotent_when_killed_between_snapshot_and_log_truncation(index_dir, tiny_model):
    svc = make_service(index_dir, tiny_model)
    svc.add_documents(["n1"], ["the horse ran"], [None])
    svc.remove_document("dog")
    svc.add_documents(["dog"], ["the dog is back"], [None])
    svc.index.save(index_dir)  # the snapshot happened; the kill came before the log was emptied
    _crash(svc)

    svc2 = make_service(index_dir, tiny_model)
    try:
        assert svc2.replayed == 3
        assert len(svc2.index) == len(DOCS) + 1
        assert svc2.get_document("dog").text == "the dog is back"
        assert svc2.get_document("n1").text == "the horse ran"
        svc2.index.check_consistency()
    finally:
        svc2.close()


def test_background_snapshot_empties_the_log(index_dir, tiny_model):
    from embedkit import EmbeddingIndex

    svc = make_service(index_dir, tiny_model, snapshot_records=2, snapshot_interval=30.0)
    try:
        svc.add_documents(["n1"], ["the horse ran"], [None])
        svc.add_documents(["n2"], ["the cow ate"], [None])
        deadline = time.monotonic() + 20
        while svc.log.records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert svc.log.records == 0 and svc.metrics.snapshots == 1
        assert log_path_for(index_dir).stat().st_size == 0
        assert len(EmbeddingIndex.load(index_dir)) == len(DOCS) + 2
    finally:
        svc.close()


def test_clean_close_snapshots(index_dir, tiny_model):
    from embedkit import EmbeddingIndex

    svc = make_service(index_dir, tiny_model)
    svc.remove_document("cat")
    svc.close()
    assert log_path_for(index_dir).stat().st_size == 0
    loaded = EmbeddingIndex.load(index_dir)
    assert len(loaded) == len(DOCS) - 1 and "cat" not in loaded


def test_a_second_server_on_the_same_index_is_refused(index_dir, tiny_model):
    svc = make_service(index_dir, tiny_model)
    try:
        with pytest.raises(WriteLogError, match="one server per index"):
            make_service(index_dir, tiny_model)
    finally:
        svc.close()


def test_searches_never_fail_during_writes(index_dir, tiny_model):
    svc = make_service(index_dir, tiny_model)
    errors, counts = [], {"searches": 0}
    stop = threading.Event()

    def searcher():
        while not stop.is_set():
            try:
                hits = svc.search(["the horse and the cow"], k=5)[0]
                assert len(hits) == 5
                counts["searches"] += 1
            except Exception as e:  # noqa: BLE001 - recorded for the assertion
                errors.append(repr(e))

    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(15):
            assert svc.add_documents([f"w{i}"], [f"the horse number {i}"], [None]) == []
            assert svc.remove_document(f"w{i}") is True
            assert all(h.id != f"w{i}" for h in svc.search(["the horse number"], k=20)[0])
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        svc.close()
    assert errors == []
    assert counts["searches"] > 0


# --- a real server, killed with SIGKILL mid-stream ---------------------------------------------------------

def test_sigkill_mid_stream_loses_no_acknowledged_write(index_dir, tmp_path):
    import httpx

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # frequent background snapshots, so that the kill can also land during a snapshot
    proc = start_server(index_dir, token_file, port, "--snapshot-interval", "0.3", "--snapshot-records", "7")
    acked_adds, acked_removes = [], []
    try:
        wait_healthy(url, proc)
        stop_at = time.monotonic() + 60
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
            i = 0
            while len(acked_adds) < 40 and time.monotonic() < stop_at:
                ids = [f"k{i}-{j}" for j in range(1 + i % 3)]
                r = c.post("/api/documents", json={"documents": [{"id": d, "text": f"the horse number {d}"} for d in ids]})
                assert r.status_code == 201, r.text
                acked_adds += ids
                if i % 5 == 4:
                    victim = acked_adds.pop(0)
                    assert c.delete(f"/api/documents/{victim}").status_code == 200
                    acked_removes.append(victim)
                i += 1
            # keep writing from a thread and kill the server while requests are in flight
            in_flight = threading.Event()

            def writer():
                k = 0
                with httpx.Client(base_url=url, headers=AUTH, timeout=5) as c2:
                    while k < 200:
                        d = f"late{k}"
                        in_flight.set()
                        try:
                            r = c2.post("/api/documents", json={"documents": [{"id": d, "text": "the cow ate food"}]})
                        except httpx.HTTPError:
                            return
                        if r.status_code == 201:
                            acked_adds.append(d)
                        k += 1

            t = threading.Thread(target=writer)
            t.start()
            assert in_flight.wait(10)
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t.join(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(acked_adds) >= 40

    proc = start_server(index_dir, token_file, port)
    try:
        wait_healthy(url, proc)
        with httpx.Client(base_url=url, timeout=10) as c:
            missing = [d for d in acked_adds if c.get(f"/api/documents/{d}").status_code != 200]
            resurrected = [d for d in acked_removes if c.get(f"/api/documents/{d}").status_code != 404]
            hits = c.get("/api/search", params={"q": "the horse number", "k": 100}).json()["hits"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert missing == [], f"{len(missing)} acknowledged adds lost"
    assert resurrected == [], f"{len(resurrected)} acknowledged removes undone"
    assert not {h["id"] for h in hits} & set(acked_removes)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its graceful shutdown
    assert log_path_for(index_dir).stat().st_size == 0  # SIGTERM: clean shutdown with a last snapshot
