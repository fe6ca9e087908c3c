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
from embedkit.serve.writelog import HEADER_SIZE, LogRecord, WriteLog, log_path_for


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
    with WriteLog(path) as log, pytest.raises(WriteLogError, match="holds records: read"):
        log.append(LogRecord("remove", ["a"]))  # appending before the end of the last record is known


def _six_records(path) -> tuple[bytes, list[int]]:
    """A log of 5 adds and a remove (lines 3-8); returns its bytes and each record's start offset."""
    offsets = []
    with WriteLog(path) as log:
        for i in range(5):
            offsets.append(log.append(_add_record(i)))
        offsets.append(log.append(LogRecord("remove", ["d0"])))
    return path.read_bytes(), offsets


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]


# each damage to acknowledged records: (the damaged file, the line the refusal names, the start of its message)
_DAMAGE = {
    "bit flip in the last record's payload": (lambda d, o: _flip(d, len(d) - 5), 8, "damaged write-log record"),
    "bit flip in the last record's CRC": (lambda d, o: _flip(d, o[-1] + 12), 8, "damaged write-log record"),
    "last 10 bytes removed": (lambda d, o: d[:-10], 8, "the log is cut short"),
    "last 3 records zeroed": (lambda d, o: d[:o[-3]] + bytes(len(d) - o[-3]), 6, "damaged write-log record"),
    "file cut at 50%": (lambda d, o: d[:len(d) // 2], None, "the log is cut short"),
    "bit flip in the first record": (lambda d, o: _flip(d, o[0] + 40), 3, "damaged write-log record"),
}


@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_damage_to_acknowledged_records_refuses_the_start(tmp_path, damage):
    path = tmp_path / "x.wal"
    good, offsets = _six_records(path)
    fn, line, message = _DAMAGE[damage]
    bad = fn(good, offsets)
    if line is None:  # the record the cut falls in
        line = 3 + sum(1 for o in offsets[1:] if o <= len(bad))
    path.write_bytes(bad)
    with WriteLog(path) as log, pytest.raises(WriteLogError) as exc:
        log.read_all()
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}: {message}"), msg
    assert "\n" not in msg and "move it aside" in msg
    assert path.read_bytes() == bad  # nothing was cut


def test_an_interrupted_append_is_cut_and_a_complete_unacknowledged_one_kept(tmp_path, caplog):
    path = tmp_path / "x.wal"
    good, offsets = _six_records(path)
    with open(path, "ab") as f:
        f.write(good[offsets[1]:offsets[2]][:30])  # a half-written append (killed mid-write; never acknowledged)
    with caplog.at_level("WARNING", logger="embedkit.serve.writelog"), WriteLog(path) as log:
        assert [r.line for r in log.read_all()] == [3, 4, 5, 6, 7, 8]
        assert log.records == 6
    assert path.read_bytes() == good
    assert "x.wal:9: cut 30 bytes of an interrupted append" in caplog.text

    # killed after the record's fsync but before the header's: complete, never acknowledged, kept (and committed)
    with WriteLog(path) as log:
        list(log.read())
        log.append(_add_record(9))
    seven = path.read_bytes()
    path.write_bytes(good[:HEADER_SIZE] + seven[HEADER_SIZE:])  # the header as it was before the 7th append
    with WriteLog(path) as log:
        assert [r.ids for r in log.read_all()][-1] == ["d9"] and log.records == 7
    with WriteLog(path) as log:
        assert len(log.read_all()) == 7  # now acknowledged: cutting the file short would be refused
    path.write_bytes(path.read_bytes()[:-3])
    with WriteLog(path) as log, pytest.raises(WriteLogError, match=r"x\.wal:9: the log is cut short"):
        log.read_all()


def test_a_torn_header_slot_keeps_every_record(tmp_path):
    path = tmp_path / "x.wal"
    good, offsets = _six_records(path)
    newest = max(range(2), key=lambda i: int(good[i * 96 + 11:i * 96 + 27], 16))
    torn = bytearray(good)
    torn[newest * 96 + 40:newest * 96 + 96] = bytes(56)  # power lost while the newest slot was written
    path.write_bytes(bytes(torn))
    with WriteLog(path) as log:
        assert [r.ids for r in log.read_all()][-1] == ["d0"] and log.records == 6  # the older slot + a kept record
    with WriteLog(path) as log:
        assert len(log.read_all()) == 6
    # a damaged slot *and* damaged bytes after the older slot's end: cannot tell what was acknowledged
    torn2 = bytearray(torn)
    torn2[-3] ^= 1
    path.write_bytes(bytes(torn2))
    with WriteLog(path) as log, pytest.raises(WriteLogError, match=r"x\.wal:8: damaged bytes after the acknowledged"):
        log.read_all()


def test_header_damage_or_a_foreign_file_refuses(tmp_path):
    path = tmp_path / "x.wal"
    good, _ = _six_records(path)
    path.write_bytes(bytes(HEADER_SIZE) + good[HEADER_SIZE:])
    with pytest.raises(WriteLogError, match=r"x\.wal:1: not an embedkit write log, or its header \(lines 1-2\) is damaged"):
        WriteLog(path)


def test_version_1_logs_are_read_strictly_then_rewritten(tmp_path, caplog):
    import json
    import zlib

    def v1_line(rec):
        body = json.dumps(rec.to_json(), separators=(",", ":")).encode()
        return b"%08x " % zlib.crc32(body) + body + b"\n"

    path = tmp_path / "x.wal"
    lines = [v1_line(_add_record(i)) for i in range(3)]
    path.write_bytes(b"".join(lines) + lines[0][:20])  # an interrupted append at the end
    with caplog.at_level("WARNING"), WriteLog(path) as log:
        assert log.version == 1
        assert [r.ids for r in log.read_all()] == [["d0"], ["d1"], ["d2"]]
        with pytest.raises(WriteLogError, match="version-1 write log; replay it into a snapshot"):
            log.append(_add_record(5))
        log.reset()  # after the snapshot: version 2 from now on
        log.append(_add_record(5))
    assert "x.wal:4: cut an incomplete last line" in caplog.text
    assert path.read_bytes()[:6] == b"EKWAL2"
    with WriteLog(path) as log:
        assert [r.ids for r in log.read_all()] == [["d5"]]
    # a complete last line that fails its check is damage, not an interrupted append
    path.write_bytes(b"".join(lines[:2]) + lines[2].replace(b"text 2", b"text X"))
    with WriteLog(path) as log, pytest.raises(WriteLogError, match=r"x\.wal:3: damaged write-log record"):
        log.read_all()


def test_a_linked_log_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    path = tmp_path / "x.wal"
    path.symlink_to(victim)
    with pytest.raises(WriteLogError, match=r"x\.wal is a symbolic link"):
        WriteLog(path)
    assert victim.read_text() == "precious\n"
    path.unlink()
    path.symlink_to(tmp_path / "nowhere")  # dangling: not created through the link either
    with pytest.raises(WriteLogError, match="symbolic link"):
        WriteLog(path)
    assert not (tmp_path / "nowhere").exists()
    path.unlink()
    path.mkdir()
    with pytest.raises(WriteLogError, match="is not a regular file"):
        WriteLog(path, create=False)


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


@pytest.mark.parametrize("damage", [d for d in _DAMAGE if d != "bit flip in the first record"])
def test_damaged_last_records_refuse_the_start_and_lose_no_acknowledged_write(index_dir, tiny_model, damage):
    svc = make_service(index_dir, tiny_model)
    assert svc.add_documents(["n1", "n2"], ["the horse ran", "the cow ate"], [None, None]) == []
    assert svc.add_documents(["n3"], ["the sheep slept"], [None]) == []
    assert svc.add_documents(["n4"], ["the goat jumped"], [None]) == []
    assert svc.remove_document("cat") is True  # the last record: an acknowledged delete
    _crash(svc)
    path = log_path_for(index_dir)
    good = path.read_bytes()
    offsets = [HEADER_SIZE]
    while offsets[-1] < len(good):
        offsets.append(good.index(b"\n", offsets[-1]) + 1)
    bad = _DAMAGE[damage][0](good, offsets[:-1])
    path.write_bytes(bad)
    with pytest.raises(WriteLogError, match=r"idx\.wal:\d+: (damaged write-log record|the log is cut short)"):
        make_service(index_dir, tiny_model)
    assert path.read_bytes() == bad  # left as it was, for the operator
    path.write_bytes(good)  # restored from a backup: every acknowledged write is there
    svc2 = make_service(index_dir, tiny_model)
    try:
        assert svc2.replayed == 4
        assert [svc2.get_document(d) is not None for d in ("n1", "n2", "n3", "n4", "cat")] == [True] * 4 + [False]
    finally:
        svc2.close()


def test_a_record_that_does_not_fit_refuses_the_start_before_any_is_applied(index_dir, tiny_model):
    from embedkit import EmbeddingIndex

    dim = EmbeddingIndex.load(index_dir).dim
    path = log_path_for(index_dir)
    with WriteLog(path) as log:
        log.append(LogRecord("add", ["a1"], ["the horse ran"], [None], np.ones((1, dim), np.float32)))
        log.append(LogRecord("add", ["a2"], ["the cow ate"], [None], np.ones((1, dim + 1), np.float32)))  # valid CRC
        log.append(LogRecord("remove", ["cat"]))
    with pytest.raises(WriteLogError) as exc:
        make_service(index_dir, tiny_model)
    assert str(exc.value).startswith(f"{path}:4: an add record that cannot be applied to the index at {index_dir} (its "
                                     f"vectors have dimension {dim + 1}, the index's have {dim}); nothing was applied")
    loaded = EmbeddingIndex.load(index_dir)
    assert "cat" in loaded and "a1" not in loaded


def test_a_version_1_log_is_replayed_and_rewritten_by_the_service(index_dir, tiny_model):
    import json
    import zlib

    from embedkit import EmbeddingIndex

    dim = EmbeddingIndex.load(index_dir).dim
    lines = []
    for rec in (LogRecord("add", ["v1"], ["the horse ran"], [{"a": 1}], np.ones((1, dim), np.float32)),
                LogRecord("remove", ["cat"])):
        body = json.dumps(rec.to_json(), separators=(",", ":")).encode()
        lines.append(b"%08x " % zlib.crc32(body) + body + b"\n")
    path = log_path_for(index_dir)
    path.write_bytes(b"".join(lines))
    svc = make_service(index_dir, tiny_model)
    try:
        assert svc.replayed == 2 and svc.get_document("v1").metadata == {"a": 1} and svc.get_document("cat") is None
        assert path.read_bytes()[:6] == b"EKWAL2" and path.stat().st_size == HEADER_SIZE  # snapshot, then format 2
        svc.remove_document("v1")
    finally:
        svc.close()


def test_a_refused_start_leaves_no_log_behind(index_dir, tiny_model):
    from embedkit.errors import IndexFormatError

    victim = index_dir / "rescore.f16.npy"
    victim.write_bytes(_flip(victim.read_bytes(), 200))  # bit rot (same size): refused while loading, after the
    with pytest.raises(IndexFormatError, match="checksum"):  # manifest was read
        make_service(index_dir, tiny_model)
    assert not log_path_for(index_dir).exists()


def test_a_linked_index_folder_is_refused(index_dir, tiny_model, tmp_path):
    from embedkit.errors import ServeError

    link = tmp_path / "link"
    link.symlink_to(index_dir)
    with pytest.raises(ServeError, match=r"link is a symbolic link \(to .*idx\); serve the index folder itself"):
        make_service(link, tiny_model)
    assert not log_path_for(link).exists() and not log_path_for(index_dir).exists()


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
        assert log_path_for(index_dir).stat().st_size == HEADER_SIZE  # the header only
        assert len(EmbeddingIndex.load(index_dir)) == len(DOCS) + 2
    finally:
        svc.close()


def test_clean_close_snapshots(index_dir, tiny_model):
    from embedkit import EmbeddingIndex

    svc = make_service(index_dir, tiny_model)
    svc.remove_document("cat")
    svc.close()
    assert log_path_for(index_dir).stat().st_size == HEADER_SIZE
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
    assert log_path_for(index_dir).stat().st_size == HEADER_SIZE  # SIGTERM: clean shutdown with a last snapshot
