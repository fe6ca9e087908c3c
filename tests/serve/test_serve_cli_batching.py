"""`embedkit serve` argument checks, and the query batcher."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from serve_helpers import free_port

from embedkit.serve.batching import BatcherStopped, Overloaded, QueryBatcher


def _run_serve(args, capsys):
    from embedkit.cli.main import run_guarded
    from embedkit.cli.serve import serve

    code = run_guarded(lambda: serve.main(args=list(args), prog_name="embedkit serve", standalone_mode=False))
    return code, capsys.readouterr().err


def test_non_loopback_with_writes_and_no_token_is_refused(index_dir, capsys, monkeypatch):
    monkeypatch.delenv("EMBEDKIT_TOKEN", raising=False)
    code, err = _run_serve([str(index_dir), "--host", "0.0.0.0"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: --host 0.0.0.0 is reachable from other machines")
    assert "--token-file" in err and "--read-only" in err and "Traceback" not in err
    assert not (index_dir.parent / "idx.wal").exists()  # refused before anything was opened


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    ("  \n", "is empty"),
    ("short", "at least 16 characters"),
])
def test_bad_token_files_are_refused(index_dir, tmp_path, capsys, content, message):
    tf = tmp_path / "token.txt"
    if content is not None:
        tf.write_text(content)
    code, err = _run_serve([str(index_dir), "--token-file", str(tf)], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_missing_index_is_refused(tmp_path, capsys):
    code, err = _run_serve([str(tmp_path / "nope")], capsys)
    assert code == 2 and "file not found" in err


def test_a_port_in_use_is_refused_before_anything_loads(index_dir, capsys, monkeypatch):
    import socket
    import time

    import embedkit.serve.service as service_module

    def no_loading(*a, **kw):
        raise AssertionError("the index was loaded although the port is in use")

    monkeypatch.setattr(service_module, "SearchService", no_loading)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        code, err = _run_serve([str(index_dir), "--port", str(port)], capsys)
    assert code == 2 and time.monotonic() - t0 < 5
    assert err.strip().splitlines() == [f"error: --port {port}: 127.0.0.1:{port} is already in use (another server is "
                                        "listening there); stop it, or choose another --port"]
    assert not (index_dir.parent / "idx.wal").exists()


def test_a_linked_index_folder_is_refused_with_one_line(index_dir, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(index_dir)
    code, err = _run_serve([str(link), "--port", str(free_port())], capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"error: {link} is a symbolic link (to {index_dir}); serve the index folder "
                                        f"itself ({index_dir.resolve()}): snapshots replace the folder by renaming, "
                                        "which would replace the link"]


def test_bind_listening_returns_bound_sockets():
    from embedkit.cli.serve import bind_listening

    socks = bind_listening("127.0.0.1", free_port())
    try:
        assert len(socks) == 1 and socks[0].getsockname()[0] == "127.0.0.1"
    finally:
        for s in socks:
            s.close()


def test_is_loopback():
    from embedkit.serve.config import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))


def test_token_from_environment(monkeypatch):
    from embedkit.serve.config import read_token

    monkeypatch.setenv("EMBEDKIT_TOKEN", " abcdefghijklmnopqrstu ")
    assert read_token(None) == ("abcdefghijklmnopqrstu", "$EMBEDKIT_TOKEN")
    monkeypatch.delenv("EMBEDKIT_TOKEN")
    assert read_token(None) == (None, None)


# --- batching ------------------------------------------------------------------------------------------

def _fake(calls, gate=None):
    def encode(texts):
        calls.append(list(texts))
        if gate is not None:
            gate.wait(10)
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    def search(Q, k, rescore):
        return [[(float(q[0]), k, rescore)] for q in Q]

    return encode, search


def test_queries_arriving_together_share_one_model_call():
    calls, gate = [], threading.Event()
    encode, search = _fake(calls, gate)
    b = QueryBatcher(encode, search, window_s=0.0, max_batch=64)
    try:
        first = b.submit("a", 1)
        while not calls:
            pass
        futures = [b.submit("x" * i, 3, rescore=i % 2 == 0) for i in range(1, 11)]
        gate.set()
        assert first.result(10) == [(1.0, 1, None)]
        results = [f.result(10) for f in futures]
    finally:
        b.close()
    assert len(calls) == 2 and len(calls[1]) == 10  # ten queued queries: one model call
    assert results == [[(float(i), 3, i % 2 == 0)] for i in range(1, 11)]  # each caller gets its own answer


def test_window_collects_queries_and_duplicates_are_encoded_once():
    calls = []
    encode, search = _fake(calls)
    b = QueryBatcher(encode, search, window_s=0.5, max_batch=3)
    try:
        futures = [b.submit(t, 2) for t in ("aa", "aa", "bbb", "c")]
        assert [f.result(10) for f in futures] == [[(2.0, 2, None)], [(2.0, 2, None)], [(3.0, 2, None)], [(1.0, 2, None)]]
    finally:
        b.close()
    assert calls[0] == ["aa", "bbb"]  # max_batch 3 queries, "aa" encoded once
    assert calls[1] == ["c"]


def test_an_encoder_error_reaches_every_caller_and_the_worker_lives_on():
    state = {"fail": True}

    def encode(texts):
        if state["fail"]:
            state["fail"] = False
            raise RuntimeError("model failed")
        return np.ones((len(texts), 1), dtype=np.float32)

    b = QueryBatcher(encode, lambda Q, k, r: [["ok"]] * len(Q), window_s=0.0)
    try:
        with pytest.raises(RuntimeError, match="model failed"):
            b.submit("a", 1).result(10)
        assert b.submit("b", 1).result(10) == ["ok"]
    finally:
        b.close()


def test_overload_and_shutdown():
    gate = threading.Event()
    calls = []
    encode, search = _fake(calls, gate)
    b = QueryBatcher(encode, search, window_s=0.0, max_pending=2)
    first = b.submit("a", 1)
    while not calls:
        pass
    waiting = [b.submit("b", 1), b.submit("c", 1)]
    with pytest.raises(Overloaded):
        b.submit("d", 1)
    with pytest.raises(Overloaded):
        b.submit_many(["e"], 1)
    gate.set()
    first.result(10)
    b.close()
    for f in waiting:
        assert f.done()
    with pytest.raises(BatcherStopped):
        b.submit("x", 1)
