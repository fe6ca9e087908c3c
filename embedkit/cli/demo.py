"""``embedkit demo``: offline end-to-end run on Python's own help topics."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from embedkit.cli._common import fmt_bytes, info

QUERIES = [
    "how do I catch an exception and clean up afterwards?",
    "iterate over the keys and values of a dictionary",
    "what does the yield keyword do in a function?",
]


def pydoc_corpus(min_chars: int = 80) -> tuple[list[str], list[str], list[dict]]:
    """Paragraphs of Python's help topics (``pydoc_data.topics``): present in every CPython install."""
    from pydoc_data.topics import topics

    ids, texts, meta = [], [], []
    for name in sorted(topics):
        paras = [" ".join(p.split()) for p in topics[name].split("\n\n")]
        for i, para in enumerate(p for p in paras if len(p) >= min_chars):
            ids.append(f"{name}#{i}")
            texts.append(para)
            meta.append({"topic": name})
    return ids, texts, meta


@click.command()
@click.option("--spec", default="binary", show_default=True, help="Compression spec of the demo index.")
@click.option("--rescore", type=int, default=4, show_default=True, help="Rescoring oversampling factor.")
@click.option("--out", default=None, help="Keep the index in this folder (default: a temporary folder).")
@click.option("--limit", type=int, default=None, help="Use only the first N paragraphs (a quicker demo).")
def demo(spec, rescore, out, limit):
    """Build a compressed index over Python's help topics with the default model and search it.

    Runs offline: the model ships with embedkit, the corpus with Python.
    """
    from embedkit.models.loading import load_encoder
    from embedkit.cache import encode_cached
    from embedkit.retrieval.index import EmbeddingIndex, directory_size

    ids, texts, meta = pydoc_corpus()
    if limit:
        ids, texts, meta = ids[:limit], texts[:limit], meta[:limit]
    info(f"corpus: {len(texts)} paragraphs of Python's help topics (pydoc_data.topics)")
    model = load_encoder()
    X = encode_cached(model, texts, desc="encoding corpus (cached after the first run)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out) if out else Path(tmp)
        sizes, lat = {}, {}
        for name, s, r in (("float", "float", None), (spec, spec, rescore)):
            t = time.perf_counter()
            idx = EmbeddingIndex.build(texts, ids, meta, model=model, spec=s, rescore=r, embeddings=X, show_progress=False)
            build_s = time.perf_counter() - t
            path = root / f"index-{s.replace(':', '_').replace(',', '+')}"
            idx.save(path)
            idx = EmbeddingIndex.load(path, model=model)
            codes = directory_size(path, exclude=("docs.sqlite", "rescore.f16.npy"))
            rescore_bytes = (path / "rescore.f16.npy").stat().st_size if (path / "rescore.f16.npy").exists() else 0
            sizes[name] = (codes, rescore_bytes, idx.bytes_per_vector)
            Q = model.encode(QUERIES, convert_to_numpy=True)
            t = time.perf_counter()
            for _ in range(20):
                for q in Q:
                    idx.search_embeddings(q[None], 5)
            lat[name] = (time.perf_counter() - t) / (20 * len(Q)) * 1e3
            if name != "float":
                shown = idx
        label = f"{spec}" + (f" + rescore x{rescore}" if rescore else "")
        click.echo(f"\nIndex {label}: {len(shown)} documents\n")
        for q, hits in zip(QUERIES, shown.search(QUERIES, k=3)):
            click.echo(f"Q: {q}")
            for h in hits:
                click.echo(f"   {h.score:.3f}  [{h.id}]  {h.text[:90]}{'…' if len(h.text) > 90 else ''}")
            click.echo()
        click.echo(f"{'index':<26}{'bytes/vector':>13}{'index in RAM':>14}{'rescore (disk)':>16}{'search':>12}")
        for name, (size, rescore_bytes, bpv) in sizes.items():
            shown_name = name if name == "float" else label
            click.echo(f"{shown_name:<26}{bpv:>13}{fmt_bytes(size):>14}{fmt_bytes(rescore_bytes):>16}{lat[name]:>9.3f} ms")
        click.echo(f"\n{spec} codes are {sizes['float'][0] / max(sizes[spec][0], 1):.0f}x smaller than float; the float16 "
                   "rescoring vectors stay on disk (memory-mapped).\nSizes exclude the SQLite docstore of texts, "
                   "the same for both; search time is per query, without encoding.")
        if out:
            click.echo(f"indexes kept under {out}")
