"""``embedkit demo``: offline end-to-end run on Python's own help topics."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click

from embedkit.cli._common import (
    POSITIVE,
    check_model,
    check_spec,
    command,
    embedding_dim,
    fmt_bytes,
    info,
    limit_option,
    load_model,
    model_option,
    option,
    prepare_output,
)

QUERIES = [
    "how do I catch an exception and clean up afterwards?",
    "iterate over the keys and values of a dictionary",
    "what does the yield keyword do in a function?",
]

MIN_CHARS = 80


def pydoc_corpus(min_chars: int = MIN_CHARS, *, stats: dict | None = None) -> tuple[list[str], list[str], list[dict]]:
    """Distinct paragraphs of Python's help topics (``pydoc_data.topics``): present in every CPython install.

    A paragraph that appears under several topics is kept once (under the first topic in sorted
    order); paragraphs shorter than ``min_chars`` characters are skipped. With ``stats`` (a dict),
    the counts are recorded there: ``paragraphs`` (all of at least ``min_chars``), ``duplicates``
    and ``short``.
    """
    from pydoc_data.topics import topics

    ids, texts, meta = [], [], []
    seen: set[str] = set()
    n_long = n_dup = n_short = 0
    for name in sorted(topics):
        paras = [" ".join(p.split()) for p in topics[name].split("\n\n")]
        long_paras = [p for p in paras if len(p) >= min_chars]
        n_short += sum(1 for p in paras if p and len(p) < min_chars)
        for i, para in enumerate(long_paras):
            n_long += 1
            if para in seen:
                n_dup += 1
                continue
            seen.add(para)
            ids.append(f"{name}#{i}")
            texts.append(para)
            meta.append({"topic": name})
    if stats is not None:
        stats.update(paragraphs=n_long, duplicates=n_dup, short=n_short)
    return ids, texts, meta


@command()
@option("--spec", default="binary", show_default=True, help="Compression spec of the demo index (compared with float).")
@click.option("--rescore", type=POSITIVE, default=4, show_default=True, help="Rescoring oversampling factor.")
@click.option("--no-rescore", is_flag=True, help="No float16 rescoring for the compressed index.")
@option("--out", "-o", "out", default=None, metavar="PATH",
        help="Keep the indexes in this new folder (default: a temporary folder).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo output at --out.")
@limit_option(help="Use only the first N paragraphs (a quicker demo).", aliases=())
@model_option(help="Encoder (default: the bundled all-MiniLM-L6-v2, offline).")
def demo(spec, rescore, no_rescore, out, overwrite, limit, model, device):
    """Build a compressed index over Python's help topics with the default model and search it.

    Runs offline: the model ships with embedkit, the corpus with Python.

    \b
    Example:
      embedkit demo
      embedkit demo --spec mrl:128,binary --limit 300 --out demo_indexes
    """
    from embedkit._io import mark_output
    from embedkit.cache import encode_cached
    from embedkit.compression.spec import parse_spec
    from embedkit.retrieval.index import EmbeddingIndex, directory_size

    # cheap checks first: the spec and the output folder, before the model is loaded
    spec = check_spec(spec)
    target = prepare_output(out, "run", overwrite=overwrite) if out else None
    shape = check_model(model)
    rescore = None if no_rescore else rescore
    stats: dict = {}
    ids, texts, meta = pydoc_corpus(stats=stats)
    n_distinct = len(texts)
    if limit:
        ids, texts, meta = ids[:limit], texts[:limit], meta[:limit]
    check_spec(spec, dim=embedding_dim(shape), n_train=len(texts))  # sizes, from the model's config: before it loads
    info(f"corpus: {len(texts)} distinct paragraphs of Python's help topics (pydoc_data.topics; "
         f"{stats['paragraphs']} paragraphs of >= {MIN_CHARS} characters, {stats['duplicates']} repeated under "
         f"another topic and dropped" + (f", first {len(texts)} of {n_distinct} kept by --limit" if limit else "") + ")")
    enc = load_model(model, device)
    from embedkit.models.identity import identity

    info(f"model: {identity(enc).source or 'in memory'} on the {identity(enc).backend} backend "
         "(--backend onnx-int8 encodes faster on CPU)")
    X = encode_cached(enc, texts, desc="encoding corpus (cached after the first run)")
    is_float = [name for name, _ in parse_spec(spec)] == ["float"]
    label = spec + (f" + rescore x{rescore}" if rescore and not is_float else "")
    runs = [("float", "float", None)] + ([] if is_float else [(label, spec, rescore)])
    with tempfile.TemporaryDirectory() as tmp:
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
            mark_output(target, "run", patterns=("index-*",))  # the indexes written below
        root = target if target is not None else Path(tmp)
        rows, shown = [], None
        Q = enc.encode(QUERIES, convert_to_numpy=True)
        for name, s, r in runs:
            idx = EmbeddingIndex.build(texts, ids, meta, model=enc, spec=s, rescore=r, embeddings=X, show_progress=False)
            path = root / f"index-{s.replace(':', '_').replace(',', '+')}"
            idx.save(path)
            idx = EmbeddingIndex.load(path, model=enc)
            codes = directory_size(path, exclude=("docs.sqlite", "rescore.f16.npy", "embedkit-output.json"))
            rescore_file = path / "rescore.f16.npy"
            rescore_bytes = rescore_file.stat().st_size if rescore_file.exists() else 0
            t = time.perf_counter()
            for _ in range(20):
                for q in Q:
                    idx.search_embeddings(q[None], 5)
            ms = (time.perf_counter() - t) / (20 * len(Q)) * 1e3
            rows.append((name, codes, rescore_bytes, idx.bytes_per_vector, ms))
            shown = idx
        click.echo(f"\nIndex {label}: {len(shown)} documents\n")
        for q, hits in zip(QUERIES, shown.search(QUERIES, k=3)):
            click.echo(f"Q: {q}")
            for h in hits:
                click.echo(f"   {h.score:.3f}  [{h.id}]  {h.text[:90]}{'…' if len(h.text) > 90 else ''}")
            click.echo()
        click.echo(f"{'index':<26}{'bytes/vector':>13}{'index in RAM':>14}{'rescore (disk)':>16}{'search':>12}")
        for name, size, rescore_bytes, bpv, ms in rows:
            click.echo(f"{name:<26}{bpv:>13}{fmt_bytes(size):>14}{fmt_bytes(rescore_bytes):>16}{ms:>9.3f} ms")
        if len(rows) > 1:
            ratio = rows[0][1] / max(rows[-1][1], 1)
            click.echo(f"\n{spec} codes are {ratio:.0f}x smaller than float"
                       + ("; the float16 rescoring vectors stay on disk (memory-mapped)." if rescore else ".")
                       + "\nSizes exclude the SQLite docstore of texts, the same for both; search time is per "
                         "query, without encoding.")
        if target is not None:
            click.echo(f"indexes kept under {out}")
