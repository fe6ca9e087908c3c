"""Helpers shared by the server tests (constants, a free port, a real server process)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

DOCS = [
    ("cat", "the cat and the kitten sleep", {"kind": "pet", "legs": 4}),
    ("dog", "a dog and a puppy play ball", {"kind": "pet"}),
    ("bird", "the bird was fast and small", None),
    ("fish", "a fish is a pet that does not run", None),
    ("stock", "stock price fell and the market was slow", {"kind": "money"}),
    ("bank", "the bank rate is high for money", None),
    ("trade", "trade in dollar and euro fund", None),
    ("python", "python code with a loop and a function", {"kind": "code"}),
    ("bug", "a bug in the test data file", None),
    ("index", "search the index with a query vector", None),
    ("king", "the king and the queen", None),
    ("doctor", "the doctor and the nurse", None),
]




def make_service(index_dir, tiny_model, **cfg):
    from embedkit.serve.config import ServeConfig
    from embedkit.serve.service import SearchService

    cfg.setdefault("token", TOKEN)
    cfg.setdefault("batch_window_ms", 1.0)
    return SearchService(index_dir, ServeConfig(**cfg), model=tiny_model)


# --- a real server in a thread of this process ------------------------------------------------------

@contextlib.contextmanager
def threaded_server(app):
    """uvicorn serving ``app`` on a free loopback port in a thread; yields ``(host, port)``."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_healthy(f"http://127.0.0.1:{port}", timeout=30)
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(30)


# --- a real server process -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}:\n{out[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/api/health", timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"server at {url} not healthy after {timeout} s")


def start_server(index_dir, token_file, port, *extra) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "EMBEDKIT_NO_CACHE": "1"}
    env.pop("EMBEDKIT_TOKEN", None)
    cmd = [sys.executable, "-m", "embedkit", "serve", str(index_dir), "--host", "127.0.0.1", "--port", str(port),
           "--token-file", str(token_file), "-q", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
