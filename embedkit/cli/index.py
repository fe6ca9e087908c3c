"""``embedkit index build|search|eval``."""

from __future__ import annotations

import time

import click

from embedkit.cli._common import fmt_bytes, info, json_option, model_option, print_json, read_corpus


@click.group()
def index():
    """Build, search and evaluate a compressed FAISS index.

    \b
    Example:
      embedkit index build --corpus ../shared/data/retrieval/scifact --out scifact_idx --spec binary --rescore 4
      embedkit index search scifact_idx "vitamin D and bone density" -k 5
      embedkit index eval scifact_idx --beir ../shared/data/retrieval/scifact --json
    """


@index.command()
@model_option
@click.option("--corpus", "-c", required=True, help="BEIR folder, corpus.jsonl[.gz], or a .txt[.gz] file (one document per line).")
@click.option("--out", "-o", required=True, help="Index folder to write (replaced atomically if it exists).")
@click.option("--spec", "-s", default="float", show_default=True, help="Compression spec, e.g. binary, int8, mrl:128,binary.")
@click.option("--backend", type=click.Choice(["flat", "hnsw", "ivf"]), default="flat", show_default=True)
@click.option("--rescore", type=int, default=None, metavar="N", help="Keep float16 vectors and rescore N*k candidates (e.g. 4).")
@click.option("--nlist", type=int, default=None, help="IVF lists (default ~4*sqrt(n)).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@json_option
def build(model, corpus, out, spec, backend, rescore, nlist, batch_size, as_json):
    """Encode a corpus, compress it and save an index folder."""
    from embedkit.retrieval.index import EmbeddingIndex, directory_size

    ids, texts, meta = read_corpus(corpus)
    info(f"{len(texts)} documents from {corpus}")
    from embedkit.models.loading import load_encoder

    enc = load_encoder(model)
    t = time.perf_counter()
    idx = EmbeddingIndex.build(texts, ids, meta, model=enc, spec=spec, backend=backend, rescore=rescore, nlist=nlist,
                               batch_size=batch_size, show_progress=True)
    idx.save(out)
    summary = {
        "out": out, "documents": len(idx), "spec": idx.compression.spec, "backend": backend, "rescore": rescore,
        "bytes_per_vector": idx.bytes_per_vector, "index_bytes_on_disk": directory_size(out),
        "build_seconds": time.perf_counter() - t,
    }
    if as_json:
        print_json(summary)
    else:
        click.echo(f"built {out}: {len(idx)} documents, spec {summary['spec']} ({idx.bytes_per_vector} B/vector), "
                   f"{fmt_bytes(summary['index_bytes_on_disk'])} on disk, {summary['build_seconds']:.1f} s")


@index.command()
@click.argument("index_dir")
@click.argument("query", nargs=-1, required=True)
@click.option("-k", default=10, show_default=True, help="Number of hits.")
@model_option
@click.option("--force", is_flag=True, help="Query with a model other than the index's.")
@click.option("--no-rescore", is_flag=True, help="Skip float16 rescoring even if the index has it.")
@json_option
def search(index_dir, query, k, model, force, no_rescore, as_json):
    """Search INDEX_DIR for QUERY (several words are joined into one query)."""
    from embedkit.retrieval.index import EmbeddingIndex

    idx = EmbeddingIndex.load(index_dir, model=model, force=force)
    q = " ".join(query)
    t = time.perf_counter()
    hits = idx.search(q, k=k, rescore=False if no_rescore else None)
    ms = (time.perf_counter() - t) * 1e3
    if as_json:
        print_json({"query": q, "ms": ms, "hits": [h.__dict__ for h in hits]})
        return
    for rank, h in enumerate(hits, 1):
        text = " ".join(h.text.split())
        click.echo(f"{rank:>3}. {h.score:.4f}  [{h.id}]  {text[:110]}{'…' if len(text) > 110 else ''}")
    info(f"{len(hits)} hits in {ms:.1f} ms (including query encoding)")


@index.command(name="eval")
@click.argument("index_dir")
@click.option("--queries", "-q", default=None, help="queries.jsonl (BEIR format).")
@click.option("--qrels", "-r", default=None, help="qrels TSV (query-id, corpus-id, score).")
@click.option("--beir", default=None, help="A BEIR folder instead of --queries/--qrels.")
@click.option("--split", default="test", show_default=True, help="qrels split with --beir.")
@model_option
@click.option("--force", is_flag=True, help="Evaluate with a model other than the index's.")
@json_option
def eval_(index_dir, queries, qrels, beir, split, model, force, as_json):
    """nDCG@10, Recall@100, MRR@10, bytes/vector, size on disk, p50 latency and batch QPS."""
    from embedkit.data.readers import _jsonl, _tsv_rows
    from embedkit.errors import DataFormatError, EmbedkitError
    from embedkit.evaluation.retrieval import evaluate_index
    from embedkit.retrieval.index import EmbeddingIndex

    if beir:
        from embedkit.data import read_beir

        ds = read_beir(beir, split)
        qmap, qrel_map = ds.queries, ds.qrels
    else:
        if not (queries and qrels):
            raise EmbedkitError("give --queries and --qrels, or --beir FOLDER")
        from pathlib import Path

        qmap = {}
        for i, obj in _jsonl(Path(queries)):
            if "_id" not in obj or "text" not in obj:
                raise DataFormatError(f"{Path(queries).name}:{i}: a query needs '_id' and 'text'")
            qmap[str(obj["_id"])] = str(obj["text"])
        qrel_map: dict = {}
        for line, row in _tsv_rows(qrels):
            if len(row) != 3:
                raise DataFormatError(f"{Path(qrels).name}:{line}: expected 3 fields (query-id, corpus-id, score)")
            qrel_map.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    idx = EmbeddingIndex.load(index_dir, model=model, force=force)
    judged = {q: r for q, r in qrel_map.items() if q in qmap}
    if not judged:
        raise EmbedkitError("no query in the qrels has a text in the queries file")
    res = evaluate_index(idx, qmap, judged, path=index_dir, show_progress=True)
    if as_json:
        print_json(res)
        return
    click.echo(f"index {index_dir}: {res['documents']} documents, spec {res['spec']}, backend {res['backend']}, rescore {res['rescore']}")
    click.echo(f"  nDCG@10     {res['ndcg@10']:.4f}")
    click.echo(f"  Recall@100  {res['recall@100']:.4f}")
    click.echo(f"  MRR@10      {res['mrr@10']:.4f}")
    click.echo(f"  bytes/vector {res['bytes_per_vector']}  (index on disk {fmt_bytes(res['index_bytes_on_disk'])}, "
               f"without docstore {fmt_bytes(res['index_bytes_without_docs'])})")
    click.echo(f"  latency p50 {res['p50_ms']:.3f} ms/query, batch {res['batch_qps']:.0f} QPS ({res['queries']} queries)")
