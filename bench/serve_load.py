"""Load test of `embedkit serve` against the plain FastAPI + sentence-transformers + FAISS app a user writes.

Setup (loopback only; every loop bounded in count and time):

* 100,000 documents: real sentences from ``unlabeled/`` (Reuters-21578 sentences, then the Wikipedia
  head). Encoding 100k sentences with all-MiniLM-L6-v2 takes far too long on this 2-core machine, so
  the **first ``--encode`` (20,000) are encoded for real** (through the embedding cache) and the other
  documents reuse those vectors cyclically with a little Gaussian noise (sigma 0.02, renormalised):
  their texts are real but do not match their vectors. Search cost does not depend on that.
* embedkit: ``binary`` codes + float16 rescoring x4 (48 B/vector), ``embedkit serve`` with dynamic
  query batching; the load is 95% searches and 5% writes (adds and removes, alternating).
* anchor, in the same run: the app a user would write — FastAPI + uvicorn, ``async def`` handler,
  one ``model.encode([q])`` and one FAISS ``IndexFlatIP`` search per request over the same float32
  vectors and texts; searches only.
* 16 concurrent clients (threads with keep-alive connections), a fixed number of requests each run
  (``--requests``, default 2,000), latency measured at the client.
* Durability: SIGKILL of the embedkit server during a burst of acknowledged writes from 8 clients,
  restart, and a count of acknowledged writes that are missing.

Targets (issue 19): search throughput >= 2x the anchor's at 16 clients; p99 <= 4x p50; zero errors;
zero lost acknowledged writes.

    python bench/serve_load.py                  # ~10 min on 2 cores (first run: +encoding 20k sentences)
    python bench/serve_load.py --requests 500   # quicker
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402

TOKEN = "bench-token-" + "0123456789abcdef"
N_CLIENTS = 16


# --- data ---------------------------------------------------------------------------------------------

def read_sentences(limit: int) -> list[str]:
    from embedkit._io import data_dir

    seen, out = set(), []
    for name in ("reuters21578_sentences.txt.gz", "wiki1m_head.txt.gz"):
        with gzip.open(data_dir() / "unlabeled" / name, "rt", encoding="utf-8") as f:
            for line in f:
                s = " ".join(line.split())
                if len(s) >= 20 and s not in seen:
                    seen.add(s)
                    out.append(s[:1000])
                    if len(out) >= limit:
                        return out
    return out


def prepare(work: Path, n_docs: int, n_encode: int, n_queries: int) -> dict:
    """Build the embedkit index and the anchor's data (vectors + texts) in ``work``."""
    from embedkit import EmbeddingIndex, encode_cached, load_encoder
    from embedkit.compression.base import l2_normalize

    texts = read_sentences(n_docs + n_queries)
    if len(texts) < n_docs + n_queries:
        raise SystemExit(f"only {len(texts)} sentences in unlabeled/; need {n_docs + n_queries}")
    docs, queries = texts[:n_docs], [q[:200] for q in texts[n_docs:n_docs + n_queries]]
    model = load_encoder()
    t = time.perf_counter()
    real = l2_normalize(encode_cached(model, docs[:n_encode], batch_size=64, desc="encoding bench documents"))
    encode_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    reps = -(-n_docs // n_encode)
    X = np.concatenate([real] + [real + rng.normal(0, 0.02, real.shape).astype(np.float32) for _ in range(reps - 1)])
    X = l2_normalize(X[:n_docs].astype(np.float32))
    ids = [f"d{i}" for i in range(n_docs)]
    t = time.perf_counter()
    idx = EmbeddingIndex.build(docs, ids, embeddings=X, model=model, spec="binary", rescore=4, show_progress=False)
    idx.save(work / "idx")
    build_s = time.perf_counter() - t
    np.save(work / "vectors.npy", X)
    (work / "texts.json").write_text(json.dumps(docs))
    (work / "queries.json").write_text(json.dumps(queries))
    (work / "token").write_text(TOKEN + "\n")
    os.chmod(work / "token", 0o600)
    return {"documents": n_docs, "encoded_for_real": n_encode, "encode_seconds": encode_s, "build_seconds": build_s,
            "queries": len(queries), "bytes_per_vector": idx.bytes_per_vector}


# --- the anchor app ------------------------------------------------------------------------------------

def anchor_main(work: Path, port: int) -> None:
    """What a user writes by hand: one encode + one FAISS search per request."""
    import faiss
    import uvicorn
    from fastapi import FastAPI
    from sentence_transformers import SentenceTransformer

    from embedkit.models.loading import load_encoder

    model: SentenceTransformer = load_encoder()
    X = np.load(work / "vectors.npy")
    texts = json.loads((work / "texts.json").read_text())
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    app = FastAPI()

    @app.get("/api/health")
    async def health():
        return {"status": "ok"}

    @app.get("/api/search")
    async def search(q: str, k: int = 10):
        emb = model.encode([q], convert_to_numpy=True, normalize_embeddings=True)
        scores, rows = index.search(emb, k)
        return {"hits": [{"id": f"d{r}", "score": float(s), "text": texts[r]} for s, r in zip(scores[0], rows[0]) if r >= 0]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# --- processes and load --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TORCH_THREADS = {"n": 1}


def env() -> dict:
    n = str(TORCH_THREADS["n"])  # the same for both servers; 1 avoids OpenMP spin contention on a shared machine
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
         "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    e.pop("EMBEDKIT_TOKEN", None)
    return e


def start_embedkit(work: Path, port: int, window_ms: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "embedkit.serve", str(work / "idx"), "--port", str(port), "--token-file",
           str(work / "token"), "--batch-window-ms", str(window_ms), "--snapshot-interval", "600", "-q"]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "ab"))


def start_anchor(work: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, os.path.abspath(__file__), "--anchor-server", "--work", str(work), "--port", str(port)]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=open(work / "anchor.log", "ab"))


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 300) -> float:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see the logs in the work folder")
        try:
            if httpx.get(url + "/api/health", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} not healthy after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_load(url: str, queries: list[str], n_requests: int, write_share: float, time_limit: float) -> dict:
    """16 client threads share ``n_requests`` requests; every (1/write_share)-th is a write."""
    import httpx

    lock = threading.Lock()
    state = {"next": 0}
    lat = {"search": [], "write": []}
    errors: list[str] = []
    added: list[str] = []
    write_every = int(round(1 / write_share)) if write_share > 0 else 0
    deadline = time.monotonic() + time_limit

    def client(cid: int):
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            while time.monotonic() < deadline:
                with lock:
                    i = state["next"]
                    if i >= n_requests:
                        return
                    state["next"] += 1
                is_write = write_every and i % write_every == write_every - 1
                t = time.perf_counter()
                try:
                    if is_write:
                        with lock:
                            victim = added.pop(0) if (i // write_every) % 2 == 1 and added else None
                        if victim is None:
                            did = f"bench-{i}"
                            r = c.post("/api/documents", json={"documents": [{"id": did, "text": queries[i % len(queries)]}]})
                            ok = r.status_code == 201
                            if ok:
                                with lock:
                                    added.append(did)
                        else:
                            r = c.delete(f"/api/documents/{victim}")
                            ok = r.status_code == 200
                    else:
                        r = c.get("/api/search", params={"q": queries[i % len(queries)], "k": 10})
                        ok = r.status_code == 200 and len(r.json()["hits"]) == 10
                except httpx.HTTPError as e:
                    ok, r = False, None
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                dt = time.perf_counter() - t
                with lock:
                    lat["write" if is_write else "search"].append(dt)
                    if not ok and r is not None:
                        errors.append(f"{r.status_code}: {r.text[:200]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    def pct(v):
        a = np.asarray(v) * 1000
        return {"n": len(v), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
                "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())} if len(v) else {"n": 0}

    done = len(lat["search"]) + len(lat["write"])
    return {"requests": done, "wall_seconds": wall, "requests_per_second": done / wall,
            "searches_per_second": len(lat["search"]) / wall, "search_latency": pct(lat["search"]),
            "write_latency": pct(lat["write"]), "errors": len(errors), "error_samples": errors[:5],
            "hit_time_limit": time.monotonic() >= deadline}


def kill_test(work: Path, window_ms: float, n_writes: int = 400, kill_after: float = 2.0) -> dict:
    """Acknowledged writes from 8 clients; SIGKILL mid-burst; restart; count what is missing."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_embedkit(work, port, window_ms)
    wait_healthy(url, proc)
    acked, lock, state = [], threading.Lock(), {"next": 0}
    started = threading.Event()

    def writer():
        with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            while True:
                with lock:
                    i = state["next"]
                    state["next"] += 1
                if i >= n_writes:
                    return
                ids = [f"kill-{i}-{j}" for j in range(1 + i % 4)]
                started.set()
                try:
                    r = c.post("/api/documents", json={"documents": [{"id": d, "text": f"burst document {d}"} for d in ids]})
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with lock:
                        acked.extend(ids)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    started.wait(30)
    time.sleep(kill_after)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    for t in threads:
        t.join(30)
    acked_at_kill = list(acked)
    proc = start_embedkit(work, port, window_ms)
    restart_s = wait_healthy(url, proc)
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            lost = [d for d in acked_at_kill if c.get(f"/api/documents/{d}").status_code != 200]
            stats = c.get("/api/stats").json()
    finally:
        stop(proc)
    return {"acknowledged_writes": len(acked_at_kill), "lost_acknowledged_writes": len(lost),
            "lost_samples": lost[:5], "restart_seconds": restart_s, "documents_after_restart": stats["documents"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=100_000)
    ap.add_argument("--encode", type=int, default=20_000, help="documents encoded for real (the rest reuse vectors)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per system")
    ap.add_argument("--window-ms", type=float, default=2.0, help="embedkit's batching window")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds at most per load run")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--out", default="serve_load")
    ap.add_argument("--torch-threads", type=int, default=1, help="OMP/MKL threads of both servers")
    ap.add_argument("--anchor-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.anchor_server:
        anchor_main(args.work, args.port)
        return

    TORCH_THREADS["n"] = args.torch_threads
    work = args.work or Path(tempfile.mkdtemp(prefix="embedkit_serve_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder: {work}", file=sys.stderr)
    setup = prepare(work, args.documents, args.encode, n_queries=2000)
    print(f"setup: {setup}", file=sys.stderr)
    queries = json.loads((work / "queries.json").read_text())
    results = {}

    port = free_port()
    proc = start_anchor(work, port)
    try:
        start_s = wait_healthy(f"http://127.0.0.1:{port}", proc)
        run_load(f"http://127.0.0.1:{port}", queries, 50, 0.0, 60)  # warm-up
        results["anchor"] = {"start_seconds": start_s, **run_load(f"http://127.0.0.1:{port}", queries, args.requests, 0.0,
                                                                  args.time_limit)}
    finally:
        stop(proc)
    print(f"anchor: {results['anchor']}", file=sys.stderr)

    port = free_port()
    proc = start_embedkit(work, port, args.window_ms)
    try:
        url = f"http://127.0.0.1:{port}"
        start_s = wait_healthy(url, proc)
        run_load(url, queries, 50, 0.0, 60)  # warm-up
        results["embedkit"] = {"start_seconds": start_s,
                               **run_load(url, queries, args.requests, 0.05, args.time_limit)}
        import httpx

        results["embedkit"]["server_stats"] = httpx.get(url + "/api/stats", timeout=10).json()
    finally:
        stop(proc)
    print(f"embedkit: {results['embedkit']}", file=sys.stderr)

    results["kill_test"] = kill_test(work, args.window_ms)
    print(f"kill test: {results['kill_test']}", file=sys.stderr)

    a, e = results["anchor"], results["embedkit"]
    ratio = e["searches_per_second"] / a["searches_per_second"]
    p99_p50 = e["search_latency"]["p99_ms"] / e["search_latency"]["p50_ms"]
    targets = {
        "search_throughput_vs_anchor": {"value": ratio, "target": ">= 2", "met": ratio >= 2},
        "p99_over_p50": {"value": p99_p50, "target": "<= 4", "met": p99_p50 <= 4},
        "errors": {"value": e["errors"] + a["errors"], "target": 0, "met": e["errors"] + a["errors"] == 0},
        "lost_acknowledged_writes": {"value": results["kill_test"]["lost_acknowledged_writes"], "target": 0,
                                     "met": results["kill_test"]["lost_acknowledged_writes"] == 0},
    }
    common.write_results(args.out, {
        "setup": {**setup, "clients": N_CLIENTS, "requests_per_system": args.requests, "write_share_embedkit": 0.05,
                  "batch_window_ms": args.window_ms, "torch_threads": args.torch_threads,
                  "load_average_at_end": os.getloadavg(), "spec": "binary + float16 rescore x4",
                  "anchor": "FastAPI async handler, model.encode([q]) + faiss.IndexFlatIP per request (float32)",
                  "note": f"the first {setup['encoded_for_real']} documents are encoded for real; the others reuse "
                          "those vectors cyclically with Gaussian noise (sigma 0.02): real texts, borrowed vectors"},
        "results": results, "targets": targets,
    })
    print(json.dumps(targets, indent=2))


if __name__ == "__main__":
    main()
