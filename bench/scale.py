"""Corpora beyond RAM (issue 18): streamed IVF builds from embedding shards, disk-backed serving.

Real vectors: sentences of ``unlabeled/`` (Reuters + wiki) encoded with the default model (through the
embedding cache). Scale: ``--n`` 384-d vectors from a seeded generator fitted on the real ones, written
as ``embedkit encode`` shards: a Gaussian mixture whose means are k-means centres of the real vectors
(drawn with the clusters' frequencies) and whose shared covariance is the real vectors' within-cluster
covariance (its full eigen-spectrum), so the total spectrum and the cluster structure both follow the
real vectors (a single Gaussian with the real spectrum has no neighbourhoods: every method's recall
collapses on it). The JSON records both spectra and the query-to-nearest-neighbour cosines of real and
generated vectors. The corpus is a JSON Lines file streamed into the docstore (never held in memory). For float-IVF,
PQ-IVF and binary-IVF + rescoring: build time and peak RSS (``VmHWM`` of the building process), index
load time and RSS before the first query, p50/p99 single-query latency and peak RSS while serving,
recall@10 against exact float search; anchor in the same run: the same FAISS index built the usual
in-memory way (``index_factory`` + ``train`` + ``add``) at the same nprobe. Every build and every
serving run is its own process, so RSS figures are that step's own.

    python bench/scale.py                                     # issue sizes: 2M vectors, all real sentences
    python bench/scale.py --n 500000 --real 20000 --nlist 1024 --sample 40000   # what fits a shared 2-core box

Writes bench/results/scale.json (the reduced sizes are recorded in it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine_info  # noqa: E402

CONFIGS = {  # name: (spec, rescore, FAISS factory body of the anchor)
    "float-ivf": ("float", None, "Flat"),
    "pq-ivf": ("pq:48x8", 4, "PQ48x8"),
    "binary-ivf+rescore": ("binary", 32, None),  # x8 keeps 0.88-0.91 recall@10 on real vectors, x32 0.95-0.985
}


def status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def real_sentences(limit: int) -> list[str]:
    from embedkit._io import data_dir

    out = []
    wiki = int(limit * 0.4)  # 40% Wikipedia (at most its 11.9k lines), the rest Reuters
    for name, n in (("wiki1m_head.txt.gz", wiki), ("reuters21578_sentences.txt.gz", None)):
        with gzip.open(data_dir() / "unlabeled" / name, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if len(line) > 20:
                    out.append(line)
                if (n is not None and len(out) >= n) or len(out) >= limit:
                    break
    return out


class Generator:
    """Gaussian mixture fitted on real vectors: k-means centres + the shared within-cluster covariance."""

    def __init__(self, real: np.ndarray, k: int, seed: int = 0):
        import faiss

        km = faiss.Kmeans(real.shape[1], k, niter=20, seed=seed, max_points_per_centroid=10_000)
        km.train(real.astype(np.float32))
        _, assign = km.index.search(real.astype(np.float32), 1)
        assign = assign[:, 0]
        self.centres = km.centroids.astype(np.float64)
        self.weights = np.bincount(assign, minlength=k) / len(real)
        resid = real - self.centres[assign]
        evals, self.basis = np.linalg.eigh(np.cov(resid, rowvar=False))
        self.scales = np.sqrt(np.maximum(evals, 0))

    def sample(self, n: int, rng) -> np.ndarray:
        c = rng.choice(len(self.centres), size=n, p=self.weights)
        X = self.centres[c] + (rng.standard_normal((n, len(self.scales))) * self.scales) @ self.basis.T
        return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def spectrum(X: np.ndarray, top: int = 10) -> dict:
    ev = np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False)))[::-1]
    return {"top_eigenvalues": [round(float(v), 6) for v in ev[:top]], "trace": round(float(ev.sum()), 6),
            "top10_share": round(float(ev[:10].sum() / ev.sum()), 4)}


def nn_cosines(Q: np.ndarray, X: np.ndarray) -> dict:
    S = Q @ X.T
    S.sort(axis=1)
    return {"top1_mean": round(float(S[:, -1].mean()), 4), "top10_mean": round(float(S[:, -10].mean()), 4),
            "corpus": len(X)}


def write_shards(folder: Path, n: int, gen: Generator, seed: int, shard_size: int = 4096) -> None:
    """Seeded synthetic vectors in `embedkit encode`'s shard format (manifest + checksums + ids.json)."""
    from embedkit._io import atomic_write_json, mark_output, sha256_file
    from embedkit.encoding import FORMAT, _texts_digest

    folder.mkdir(parents=True)
    mark_output(folder, "shards")
    rng = np.random.default_rng(seed)
    sums = {}
    for s in range(-(-n // shard_size)):
        m = min(n, (s + 1) * shard_size) - s * shard_size
        X = gen.sample(m, rng)
        name = f"shard-{s:05d}.npy"
        np.save(folder / name, X)
        sums[name] = sha256_file(folder / name)
    ids = [str(i) for i in range(n)]
    atomic_write_json(folder / "ids.json", ids)
    atomic_write_json(folder / "manifest.json", {
        "format": FORMAT, "model": {"source": "synthetic (bench/scale.py)", "fingerprint": None},
        "texts_sha256": "synthetic", "ids_sha256": _texts_digest(ids), "count": n, "shard_size": shard_size,
        "dim": int(gen.basis.shape[0]), "shard_sha256": sums})


def write_corpus(path: Path, n: int) -> None:
    """The documents of ids 0..n-1 as JSON Lines (what `index build --corpus` streams)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"_id": str(i), "text": f"document {i}"}) + "\n")


def exact_topk(shards_dir: Path, Q: np.ndarray, k: int = 10) -> np.ndarray:
    from embedkit.encoding import open_shards

    sh = open_shards(shards_dir)
    best_s = np.full((len(Q), k), -np.inf, np.float32)
    best_i = np.full((len(Q), k), -1, np.int64)
    for first, X in sh.iter_shards():
        S = Q @ X.T
        cand_s = np.concatenate([best_s, S], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(first, first + len(X)), S.shape)], axis=1)
        top = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(found, truth)]))


# -- child processes -------------------------------------------------------------------------------
def child_build(a) -> dict:
    from embedkit.retrieval.sharded import build_index_from_shards

    base = status("VmRSS")
    t = time.perf_counter()
    idx = build_index_from_shards(a.shards, a.out, corpus=a.corpus, spec=a.spec, rescore=a.rescore,
                                  nlist=a.nlist, sample_size=a.sample, nprobe=a.nprobe, overwrite=True)
    secs = time.perf_counter() - t
    return {"build_seconds": secs, "peak_rss_bytes": status("VmHWM"), "rss_before_build_bytes": base,
            "count": len(idx), "nprobe": idx.nprobe}


def child_anchor(a) -> dict:
    import faiss

    from embedkit.encoding import open_shards

    sh = open_shards(a.shards)
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(sh.count, size=min(a.sample, sh.count), replace=False))
    train = sh.read_rows(rows)
    if a.body is None:  # binary IVF over sign bits, like embedkit's binary spec
        q = faiss.IndexBinaryFlat(sh.dim)
        index = faiss.IndexBinaryIVF(q, sh.dim, a.nlist)
        index.train(np.packbits(train > 0, axis=1))
        for _, X in sh.iter_shards():
            index.add(np.packbits(X > 0, axis=1))
    else:
        index = faiss.index_factory(sh.dim, f"IVF{a.nlist},{a.body}", faiss.METRIC_INNER_PRODUCT)
        index.train(train)
        for _, X in sh.iter_shards():
            index.add(X)
    secs = time.perf_counter() - t
    peak = status("VmHWM")
    Q = np.load(a.qfile)
    faiss.omp_set_num_threads(1)
    ivf = index if a.body is None else faiss.extract_index_ivf(index)
    ivf.nprobe = a.nprobe
    kk = 10 * (a.rescore or 1)
    _, found = index.search(np.packbits(Q > 0, axis=1) if a.body is None else Q, kk)
    return {"build_seconds": secs, "peak_rss_bytes": peak, "found": found[:, :10].tolist() if not a.rescore else None,
            "candidates": found.tolist() if a.rescore else None}


def child_serve(a) -> dict:
    from embedkit import EmbeddingIndex

    Q = np.load(a.qfile)
    base = status("VmRSS")
    t = time.perf_counter()
    idx = EmbeddingIndex.load(a.out)
    load_s = time.perf_counter() - t
    rss_loaded = status("VmRSS") - base
    lat, found = [], []
    for q in Q:
        t = time.perf_counter()
        _, rows = idx.search_embeddings(q[None], 10)
        lat.append(time.perf_counter() - t)
        found.append(rows[0])
    hits = idx.search(Q[:1], k=10)[0]  # texts from the on-disk docstore
    assert len(hits) == 10
    lat = np.array(lat[5:]) * 1000
    return {"load_seconds": load_s, "rss_after_load_bytes": rss_loaded, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "peak_rss_serving_bytes": status("VmHWM"),
            "found": np.array(found).tolist(), "nprobe": idx.nprobe}


def scifact_defaults() -> dict:
    """SciFact nDCG@10 of flat vs IVF (default nlist and nprobe) vs HNSW (default efSearch), same vectors."""
    from common import scifact

    from embedkit.compression.base import default_nlist
    from embedkit.evaluation.retrieval import evaluate_index
    from embedkit.retrieval.index import EmbeddingIndex

    ds, doc_ids, docs, q_ids, queries, model = scifact()
    qtexts = {q: ds.queries[q] for q in q_ids}
    out = {}
    for name, kw in (("float flat", {}), ("float ivf (defaults)", {"backend": "ivf"}),
                     ("float hnsw (defaults)", {"backend": "hnsw"}),
                     ("binary ivf + rescore x4 (defaults)", {"backend": "ivf", "spec": "binary", "rescore": 4})):
        texts = [ds.corpus[d]["text"] for d in doc_ids]
        idx = EmbeddingIndex.build(texts, doc_ids, model=model, embeddings=docs, show_progress=False, **kw)
        r = evaluate_index(idx, qtexts, ds.qrels, query_embeddings=queries)
        out[name] = {"ndcg@10": round(float(r["ndcg@10"]), 4), "nprobe": idx.nprobe, "ef_search": idx.ef_search,
                     "nlist": (idx.nlist or default_nlist(len(docs))) if kw.get("backend") == "ivf" else None}
    flat = out["float flat"]["ndcg@10"]
    for v in out.values():
        v["share_of_flat"] = round(v["ndcg@10"] / flat, 4)
    return out


def run_child(kind: str, **kw) -> dict:
    args = [sys.executable, __file__, "--child", kind]
    for k, v in kw.items():
        if v is not None:
            args += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.iterdir() if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--real", type=int, default=106_000, help="real sentences to encode (cached)")
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--sample", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--work", default="/tmp/embedkit-scale")
    ap.add_argument("--output", default=str(RESULTS / "scale.json"))
    ap.add_argument("--child", default=None)
    ap.add_argument("--shards")
    ap.add_argument("--out")
    ap.add_argument("--spec")
    ap.add_argument("--rescore", type=int, default=None)
    ap.add_argument("--body", default=None)
    ap.add_argument("--qfile")
    ap.add_argument("--corpus")
    ap.add_argument("--clusters", type=int, default=None, help="mixture components of the generator "
                    "(default: real vectors / 100, at least 16)")
    ap.add_argument("--binary-rescore", type=int, default=None, help="rescore factor of binary-IVF (default: CONFIGS)")
    ap.add_argument("--scifact-only", action="store_true", help="only the SciFact defaults check (cached embeddings)")
    a = ap.parse_args()
    if a.child:
        fn = {"build": child_build, "anchor": child_anchor, "serve": child_serve}[a.child]
        print(json.dumps(fn(a)))
        return

    if a.scifact_only:
        print(json.dumps(scifact_defaults(), indent=1))
        return
    import shutil

    from embedkit.cache import encode_cached
    from embedkit.compression.base import default_nlist
    from embedkit.models.loading import load_encoder
    from embedkit.retrieval.index import default_nprobe

    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    texts = real_sentences(a.real)
    real = encode_cached(load_encoder(), texts, batch_size=64, desc="unlabeled sentences")
    real = real / np.linalg.norm(real, axis=1, keepdims=True)
    real = real[np.random.default_rng(0).permutation(len(real))]  # held-out queries from both sources
    encode_s = time.perf_counter() - t
    nq = a.queries
    held = real[-nq:]
    corpus = real[:-nq]
    # generator: a Gaussian mixture fitted on the real vectors (held-out queries excluded)
    k = a.clusters or max(16, len(corpus) // 100)
    gen = Generator(corpus, k)
    nlist = a.nlist or default_nlist(a.n)
    nprobe = a.nprobe or default_nprobe(nlist)
    shards = work / "shards"
    t = time.perf_counter()
    write_shards(shards, a.n, gen, seed=1)
    write_corpus(work / "corpus.jsonl", a.n)
    gen_s = time.perf_counter() - t
    Q = gen.sample(nq, np.random.default_rng(2))
    np.save(work / "q.npy", Q)
    from embedkit.encoding import open_shards

    synth_sample = open_shards(shards).read_rows(np.arange(min(a.n, len(corpus))))
    fidelity = {"clusters": k, "real": {**spectrum(corpus), "nn": nn_cosines(held, corpus)},
                "generated": {**spectrum(synth_sample), "nn": nn_cosines(Q, synth_sample)}}
    del synth_sample
    print("generator fidelity:", json.dumps(fidelity), file=sys.stderr, flush=True)
    truth = exact_topk(shards, Q)
    float_bytes = a.n * real.shape[1] * 4
    result = {
        "machine": machine_info(),
        "command": " ".join(["python", "bench/scale.py", *sys.argv[1:]]),
        "reduced": {"n": a.n, "issue_n": 2_000_000, "real": len(texts), "issue_real": "all ~106k",
                    "note": "sizes reduced to finish in ~10 minutes on a shared 2-core machine" if a.n < 2_000_000 else None},
        "n": a.n, "dim": int(real.shape[1]), "nlist": nlist, "nprobe": nprobe, "sample": a.sample,
        "float_vectors_bytes": float_bytes, "real_encode_seconds": encode_s, "generate_seconds": gen_s,
        "generator": fidelity, "scifact_defaults": scifact_defaults(), "configs": {},
    }
    # real-data check: recall of the streamed index against exact search on real vectors
    real_dir = work / "real_shards"
    from embedkit._io import atomic_write_json, mark_output, sha256_file
    from embedkit.encoding import FORMAT, _texts_digest

    real_dir.mkdir()
    mark_output(real_dir, "shards")
    sums = {}
    for s in range(-(-len(corpus) // 4096)):
        np.save(real_dir / f"shard-{s:05d}.npy", corpus[s * 4096:(s + 1) * 4096].astype(np.float32))
        sums[f"shard-{s:05d}.npy"] = sha256_file(real_dir / f"shard-{s:05d}.npy")
    rid = [str(i) for i in range(len(corpus))]
    atomic_write_json(real_dir / "ids.json", rid)
    atomic_write_json(real_dir / "manifest.json", {"format": FORMAT, "model": {"source": "default", "fingerprint": None},
                                                   "texts_sha256": "x", "ids_sha256": _texts_digest(rid),
                                                   "count": len(corpus), "shard_size": 4096, "dim": corpus.shape[1],
                                                   "shard_sha256": sums})
    np.save(work / "real_q.npy", held.astype(np.float32))
    write_corpus(work / "real_corpus.jsonl", len(corpus))
    real_truth = np.argsort(-(held @ corpus.T), axis=1)[:, :10]
    for name in a.configs.split(","):
        spec, rescore, body = CONFIGS[name]
        if name.startswith("binary") and a.binary_rescore:
            rescore = a.binary_rescore
        out = work / f"idx-{name}"
        print(f"[{name}] build", file=sys.stderr, flush=True)
        b = run_child("build", shards=shards, out=out, corpus=work / "corpus.jsonl", spec=spec, rescore=rescore,
                      nlist=nlist, sample=a.sample, nprobe=nprobe)
        s = run_child("serve", out=out, qfile=work / "q.npy")
        print(f"[{name}] anchor", file=sys.stderr, flush=True)
        an = run_child("anchor", shards=shards, nlist=nlist, sample=a.sample or min(a.n, 40 * nlist), nprobe=nprobe,
                       qfile=work / "q.npy", body=body, rescore=rescore)
        if rescore:  # the anchor's candidates rescored exactly like embedkit: float16 vectors of the spec
            from embedkit.encoding import open_shards

            sh = open_shards(shards)
            cand = np.array(an["candidates"])
            V = sh.read_rows(np.unique(cand[cand >= 0])).astype(np.float16).astype(np.float32)
            uniq = np.unique(cand[cand >= 0])
            pos = np.searchsorted(uniq, np.maximum(cand, 0))
            sc = np.einsum("qd,qkd->qk", Q, V[pos])
            sc[cand < 0] = -np.inf
            an_found = np.take_along_axis(cand, np.argsort(-sc, axis=1, kind="stable")[:, :10], 1)
        else:
            an_found = np.array(an["found"])
        run_child("build", shards=real_dir, out=work / f"real-{name}", corpus=work / "real_corpus.jsonl", spec=spec,
                  rescore=rescore,
                       nlist=default_nlist(len(corpus)), nprobe=None)
        rs = run_child("serve", out=work / f"real-{name}", qfile=work / "real_q.npy")
        disk = dir_bytes(out)
        result["configs"][name] = {
            "spec": spec, "rescore": rescore,
            "build_seconds": b["build_seconds"], "build_peak_rss_bytes": b["peak_rss_bytes"],
            "build_peak_rss_share_of_float": b["peak_rss_bytes"] / float_bytes,
            "rss_before_build_bytes": b["rss_before_build_bytes"],
            "index_disk_bytes": disk, "load_seconds": s["load_seconds"], "rss_after_load_bytes": s["rss_after_load_bytes"],
            "rss_after_load_share_of_disk": s["rss_after_load_bytes"] / disk,
            "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"], "serving_peak_rss_bytes": s["peak_rss_serving_bytes"],
            "recall_at_10": recall(np.array(s["found"]), truth),
            "anchor": {"build_seconds": an["build_seconds"], "peak_rss_bytes": an["peak_rss_bytes"],
                       "recall_at_10": recall(an_found, truth)},
            "real": {"n": len(corpus), "nlist": default_nlist(len(corpus)), "nprobe": rs["nprobe"],
                     "recall_at_10": recall(np.array(rs["found"]), real_truth), "p50_ms": rs["p50_ms"]},
        }
        print(json.dumps({name: result["configs"][name]}, indent=1), file=sys.stderr, flush=True)
        shutil.rmtree(out, ignore_errors=True)
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.output, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
