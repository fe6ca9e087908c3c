"""``embedkit index build|add|remove|search|eval``."""

from __future__ import annotations

import time

import click

from embedkit.cli._common import (
    POSITIVE,
    batch_size_option,
    check_input,
    check_model,
    check_spec,
    command,
    corpus_option,
    embedding_dim,
    fmt_bytes,
    index_encoder,
    info,
    json_option,
    load_model,
    model_option,
    option,
    out_option,
    precision_option,
    prepare_output,
    print_json,
    show_progress,
)
from embedkit.cli.tune import budget_options, build_by_budget, tune_command
from embedkit.errors import EmbedkitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def index():
    """Build, update, search and evaluate a compressed FAISS index.

    \b
    Example:
      embedkit index build --corpus ../shared/data/retrieval/scifact --out scifact_idx --spec binary --rescore 4
      embedkit index search scifact_idx "vitamin D and bone density" -k 5
      embedkit index add scifact_idx --corpus new_docs.jsonl
      embedkit index remove scifact_idx 4983 5836
      embedkit index eval scifact_idx --beir ../shared/data/retrieval/scifact --json
    """


def _load_index(index_dir, model, device, force, check=None):
    """Load an index once, then its model (``--model``/``--device``, else the one it was built with).

    ``check(index)``, when given, runs on the loaded index before any model is loaded (arguments
    that only the index can judge: ids it already holds, judged documents it lacks). The model is
    attached with :meth:`~embedkit.retrieval.base.IndexBase.use_model`, which checks its fingerprint.

    Returns ``(index, index_seconds, model_seconds)``.
    """
    from embedkit.cli._common import STATE
    from embedkit.retrieval.index import EmbeddingIndex

    t0 = time.perf_counter()
    idx = EmbeddingIndex.load(index_dir, force=force)
    t1 = time.perf_counter()
    if check is not None:
        check(idx)
    t2 = time.perf_counter()
    if model is None and device is None and not STATE.backend_given:
        idx.model  # noqa: B018 - load the recorded model now, so that it is timed as loading
    else:
        # --model, or the recorded model rebuilt as it was (sub-model size), on --backend / --device
        idx.use_model(index_encoder(idx.model_source, idx.model_options, model, device), force=force)
    return idx, t1 - t0, time.perf_counter() - t2


def _indexable(texts, ids, meta, strict: bool) -> int:
    """The document checks of ``EmbeddingIndex.add`` that need no model (ids, metadata, blank
    documents with ``--strict``); returns how many documents will be indexed."""
    from embedkit.data import is_blank, validate_documents

    if strict:
        return len(validate_documents(texts, ids, meta, on_empty="error"))
    keep = [i for i, t in enumerate(texts) if not (isinstance(t, str) and is_blank(t))]
    if not keep:
        raise EmbedkitError(f"the corpus is empty: all {len(texts)} documents are empty or whitespace-only")
    # blank documents left out here: add() skips them with its one warning
    validate_documents([texts[i] for i in keep], [ids[i] for i in keep],
                       None if meta is None else [meta[i] for i in keep], on_empty="error")
    return len(keep)


_MODE_OPTION = click.option(
    "--mode", type=click.Choice(["dense", "keyword", "hybrid"]), default="dense", show_default=True,
    help="dense (vectors), keyword (BM25) or hybrid (both, reciprocal-rank fused).")
_WHERE_OPTION = click.option(
    "--where", default=None, metavar="JSON",
    help='Metadata filter, e.g. \'{"year": {"$gte": 2020}, "lang": {"$in": ["en", "de"]}}\' (see docs/retrieval.md).')


def _check_where(where):
    """The ``--where`` filter parsed (syntax only; fields are checked against the index), or None."""
    from embedkit.retrieval.filters import parse_where

    if where is None:
        return None
    try:
        parse_where(where)
    except EmbedkitError as e:
        raise EmbedkitError(f"--where {where}: {str(e).removeprefix('where: ')}") from None
    import json

    return json.loads(where)


_STRICT_HELP = "Refuse blank documents (empty or whitespace only) instead of skipping them with a warning."


@command(index)
@model_option
@corpus_option()
@out_option(help="Index folder to write (a new or empty folder; --overwrite replaces an earlier index).")
@option("--spec", "-s", default="float", show_default=True, help="Compression spec, e.g. binary, int8, mrl:128,binary.")
@option("--index-type", "index_type", type=click.Choice(["flat", "hnsw", "ivf"]), default=None,
        help="FAISS structure over the codes: flat (exact), hnsw or ivf [flat].")
@click.option("--nprobe", type=POSITIVE, default=None, metavar="N", help="IVF lists searched per query [measured default].")
@click.option("--ef-search", type=POSITIVE, default=None, metavar="N", help="HNSW efSearch [128].")
@click.option("--embeddings", default=None, metavar="DIR",
              help="Build from `embedkit encode` shards instead of encoding (IVF lists written to disk).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="With --embeddings: write each shard's lists as Ray tasks (pip install 'embedkit[ray]').")
@click.option("--rescore", type=POSITIVE, default=None, metavar="N", help="Keep float16 vectors and rescore N*k candidates (e.g. 4).")
@click.option("--nlist", type=POSITIVE, default=None, metavar="N", help="IVF lists (default ~4*sqrt(n); at most the number of documents).")
@click.option("--keyword/--no-keyword", default=True, show_default=True,
              help="Keep a BM25 keyword index of the texts in the docstore (search --mode keyword|hybrid).")
@click.option("--fit-pairs", "fit_pairs", default=None, metavar="PAIRS",
              help="(query, relevant document id) pairs the codec learns from (bebr only): a BEIR folder "
                   "(its qrels/train.tsv) or a query<TAB>doc_id TSV.")
@batch_size_option()
@precision_option
@click.option("--strict", is_flag=True, help=_STRICT_HELP)
@budget_options
@json_option
def build(model, device, corpus, out, overwrite, spec, index_type, nprobe, ef_search, embeddings, ray_address, rescore,
          nlist, keyword, fit_pairs, batch_size, precision, strict, as_json, **budget):
    """Encode a corpus, compress it and save an index folder.

    \b
    Example:
      embedkit index build --corpus ../shared/data/retrieval/scifact --out scifact_idx --spec binary --rescore 4
      embedkit index build --corpus docs.txt --out docs_idx --index-type hnsw -m ./my-model
      embedkit encode --corpus big.jsonl.gz --out emb && \\
        embedkit index build --embeddings emb --corpus big.jsonl.gz --out big_idx --index-type ivf --spec binary --rescore 8
    """
    from embedkit.cli._common import STATE

    if STATE.legacy_index_type is not None:
        import warnings

        warnings.warn(f"--backend {STATE.legacy_index_type} is the old spelling of --index-type "
                      f"{STATE.legacy_index_type}; --backend now picks the encoder runtime (torch, onnx, onnx-int8)",
                      DeprecationWarning, stacklevel=1)
    index_type = index_type or STATE.legacy_index_type or "flat"
    from embedkit.data import read_corpus
    from embedkit.models.resolve import model_backend
    from embedkit.retrieval.index import EmbeddingIndex, directory_size

    # cheap checks first: nothing is loaded before every argument is known to be usable
    spec = check_spec(spec, backend=index_type)
    check_input(corpus, "--corpus")
    if fit_pairs is not None:
        check_fit_pairs(spec, fit_pairs, embeddings)
    target = prepare_output(out, "index", overwrite=overwrite, inputs=[corpus, embeddings])
    shape = check_model(model)
    if any(v is not None for v in budget.values()):  # the tuner chooses size, spec, rescoring and structure
        return build_by_budget(model=model, device=device, corpus=corpus, target=target, out=out, keyword=keyword,
                               batch_size=batch_size, strict=strict, as_json=as_json, **budget)
    if embeddings is not None:
        from embedkit.compression.base import check_nlist
        from embedkit.retrieval.sharded import build_command, default_sample_size
        from embedkit.shards import open_shards

        check_input(embeddings, "--embeddings", kind="dir")
        shards = open_shards(embeddings)  # manifest and .npy headers only
        n_train = default_sample_size(shards.count, check_nlist(nlist, shards.count)) if index_type == "ivf" \
            else shards.count
        check_spec(spec, dim=shards.dim, n_train=n_train, backend=index_type, disk=True)
        summary = build_command(embeddings, corpus, target, spec=spec, index_type=index_type, rescore=rescore, nlist=nlist,
                                nprobe=nprobe, ef_search=ef_search, model=model, overwrite=overwrite, ray=ray_address)
        if as_json:
            print_json(summary)
        else:
            click.echo(f"built {out} from {embeddings}: " + ", ".join(f"{k} {v}" for k, v in summary.items()
                                                                        if k in ("documents", "spec", "index_type")))
        return
    ids, texts, meta = read_corpus(corpus)
    if nlist is not None and index_type == "ivf" and nlist > len(texts):
        raise EmbedkitError(f"--nlist {nlist} is more than the {len(texts)} documents of {corpus}; "
                            f"use at most {len(texts)} (or omit it)")
    n_docs = _indexable(texts, ids, meta, strict)
    check_spec(spec, dim=embedding_dim(shape), n_train=n_docs, backend=index_type)  # sizes: before the model loads
    warn_untrained_cut(model, shape, spec)
    pairs = None
    if fit_pairs is not None:
        from embedkit.data import read_retrieval_pairs

        pairs = read_retrieval_pairs(fit_pairs, doc_ids=ids)
        info(f"{len(pairs)} fit pairs from {fit_pairs}")
    info(f"{len(texts)} documents from {corpus}")
    enc = load_model(model, device, precision=precision)
    t = time.perf_counter()
    idx = EmbeddingIndex.build(texts, ids, meta, model=enc, spec=spec, index_type=index_type, rescore=rescore, nlist=nlist,
                               nprobe=nprobe, ef_search=ef_search, keyword=keyword, fit_pairs=pairs,
                               batch_size=batch_size, show_progress=show_progress(),
                               on_empty="error" if strict else "skip")
    idx.save(target)
    summary = {
        "out": out, "documents": len(idx), "skipped_documents": len(texts) - len(idx), "spec": idx.compression.spec,
        "index_type": index_type, "backend": model_backend(enc), "rescore": rescore, "keyword": keyword,
        "bytes_per_vector": idx.bytes_per_vector,
        "index_bytes_on_disk": directory_size(target), "build_seconds": time.perf_counter() - t,
    }
    if as_json:
        print_json(summary)
    else:
        skipped = f" ({summary['skipped_documents']} blank skipped)" if summary["skipped_documents"] else ""
        click.echo(f"built {out}: {len(idx)} documents{skipped}, spec {summary['spec']} ({idx.bytes_per_vector} B/vector), "
                   f"{fmt_bytes(summary['index_bytes_on_disk'])} on disk, {summary['build_seconds']:.1f} s")


def warn_untrained_cut(model, shape, spec: str) -> None:
    """An ``mrl:D`` stage on a model that records its trained sizes (Starbucks, Matryoshka, 2DMSE) warns
    (:class:`~embedkit.errors.UntrainedSizeWarning`) when (depth, D) is not one of them: for a Starbucks
    model the trained sub-models are ``--layers L --dim D`` from its ladder, not a cut at full depth."""
    from embedkit.cli._common import STATE
    from embedkit.compression.spec import parse_spec
    from embedkit.models.loading import resolve_model
    from embedkit.models.submodel import check_trained_size

    if shape is None or shape.layers is None or shape.dim is None:
        return
    depth = STATE.layers or shape.layers
    for name, kw in parse_spec(spec):
        if name == "mrl":
            check_trained_size(resolve_model(model), depth, int(kw["dim"]), full=(shape.layers, shape.dim))


def check_fit_pairs(spec: str, source: str, embeddings) -> None:
    """``--fit-pairs`` before anything loads: a codec that learns from pairs, a readable source, no shards."""
    from embedkit.compression.spec import quantizer_from_spec

    if embeddings is not None:
        raise EmbedkitError("--fit-pairs works when index build encodes the corpus; it cannot be used with --embeddings")
    if not getattr(quantizer_from_spec(spec).quantizer, "accepts_pairs", False):
        raise EmbedkitError(f"--fit-pairs: spec {spec!r} does not learn from query-document pairs; "
                            "fit pairs are used by bebr only (e.g. --spec bebr:1)")
    check_input(source, "--fit-pairs", kind="any")


def _numbered_after(idx, n: int) -> list[str]:
    """``n`` ids that no document of ``idx`` has: whole numbers after the ones it holds (a text file's
    documents are numbered by line, from 1, so the next text file continues the numbering)."""
    start = len(idx) + 1
    while True:
        block = [str(start + i) for i in range(n)]
        clash = idx.present_ids(block)
        if not clash:
            return block
        start = max(int(c) for c in clash) + 1


@command(index)
@click.argument("index_dir")
@corpus_option(help="Documents to add (same formats as `index build`). Their ids must be new; a text file's lines "
                    "(which have no ids) are numbered after the index's numbers.")
@model_option(help="Encoder (default: the model the index was built with).")
@click.option("--force", is_flag=True, help="Encode with a model other than the index's.")
@batch_size_option()
@click.option("--strict", is_flag=True, help=_STRICT_HELP)
@json_option
def add(index_dir, corpus, model, device, force, batch_size, strict, as_json):
    """Add documents to an index and save it in place (atomically: all documents or none).

    Documents of a BEIR folder or a JSON Lines file keep their ids, which must be new. A text file
    has no ids: its lines get the whole numbers after the largest the index holds (an index built
    from a text file numbers its lines from 1), so they cannot collide. Ids are checked before
    anything is encoded.

    \b
    Example:
      embedkit index add scifact_idx --corpus new_docs.jsonl
      embedkit index add docs_idx --corpus more_docs.txt
    """
    from pathlib import Path

    from embedkit.data import read_corpus

    check_input(corpus, "--corpus")
    check_model(model)
    ids, texts, meta = read_corpus(corpus)
    _indexable(texts, ids, meta, strict)
    numbered = Path(corpus).is_file() and not str(corpus).endswith((".jsonl", ".jsonl.gz"))

    def new_ids_only(idx):
        if numbered:  # text lines: ids that no document of the index has, chosen before encoding
            ids[:] = _numbered_after(idx, len(ids))
            info(f"{corpus} has no ids: its {len(ids)} documents get ids {ids[0]}..{ids[-1]}")
            return
        clash = idx.present_ids(ids)
        if clash:
            raise EmbedkitError(f"--corpus {corpus}: {len(clash)} document id(s) already in {index_dir}: "
                                f"{', '.join(map(repr, clash[:5]))}{', ...' if len(clash) > 5 else ''}; "
                                "give new ids (or remove those first with `embedkit index remove`)")

    idx, _, _ = _load_index(index_dir, model, device, force, check=new_ids_only)
    before = len(idx)
    idx.add(texts, ids, meta, batch_size=batch_size, show_progress=show_progress(),
            on_empty="error" if strict else "skip")
    idx.save(index_dir)
    summary = {"index": index_dir, "added": len(idx) - before, "documents": len(idx),
               "skipped_documents": len(texts) - (len(idx) - before), "first_id": ids[0], "last_id": ids[-1]}
    if as_json:
        print_json(summary)
    else:
        click.echo(f"added {summary['added']} documents to {index_dir} (ids {ids[0]}..{ids[-1]}): {len(idx)} in all")


@command(index)
@click.argument("index_dir")
@click.argument("ids", nargs=-1, required=True)
@json_option
def remove(index_dir, ids, as_json):
    """Remove documents by id and save the index in place (atomically: all of them or none).

    \b
    Example:
      embedkit index remove scifact_idx 4983 5836
    """
    from embedkit.retrieval.index import EmbeddingIndex

    idx = EmbeddingIndex.load(index_dir)
    before = len(idx)
    idx.remove(list(dict.fromkeys(ids)))
    idx.save(index_dir)
    summary = {"index": index_dir, "removed": before - len(idx), "documents": len(idx)}
    if as_json:
        print_json(summary)
    else:
        click.echo(f"removed {summary['removed']} documents from {index_dir}: {len(idx)} left")


@command(index)
@click.argument("index_dir")
@click.argument("query", nargs=-1, required=True)
@click.option("-k", "k", type=POSITIVE, default=10, show_default=True, help="Number of hits.")
@model_option(help="Encoder for the query (default: the model the index was built with).")
@click.option("--force", is_flag=True, help="Query with a model other than the index's.")
@click.option("--no-rescore", is_flag=True, help="Skip float16 rescoring even if the index has it.")
@_MODE_OPTION
@_WHERE_OPTION
@click.option("--fusion", type=click.Choice(["rrf", "weighted"]), default="rrf", show_default=True,
              help="How --mode hybrid fuses the two lists: reciprocal-rank fusion or weighted min-max scores.")
@json_option
def search(index_dir, query, k, model, device, force, no_rescore, mode, where, fusion, as_json):
    """Search INDEX_DIR for QUERY (several words are joined into one query).

    \b
    Example:
      embedkit index search scifact_idx "vitamin D deficiency and bone fractures" -k 5
      embedkit index search scifact_idx "vitamin D" --json
      embedkit index search scifact_idx "vitamin D" --mode hybrid --where '{"year": {"$gte": 2020}}'
    """
    from embedkit.data import is_blank
    from embedkit.models.resolve import model_backend

    q = " ".join(query)
    if is_blank(q):
        raise EmbedkitError("QUERY is empty; give some text to search for")
    check_model(model)
    where = _check_where(where)
    if mode == "keyword":  # no query encoding: the model is not loaded
        from embedkit.retrieval.index import EmbeddingIndex

        t0 = time.perf_counter()
        idx, model_s = EmbeddingIndex.load(index_dir, force=force), 0.0
        index_s = time.perf_counter() - t0
    else:
        idx, index_s, model_s = _load_index(index_dir, model, device, force)
    t = time.perf_counter()
    hits = idx.search(q, k=k, rescore=False if no_rescore else None, mode=mode, where=where, fusion=fusion)
    search_ms = (time.perf_counter() - t) * 1e3
    backend = None if mode == "keyword" else model_backend(idx.model)
    if as_json:
        print_json({"query": q, "mode": mode, "where": where, "backend": backend, "index_type": idx.index_type,
                    "index_load_ms": index_s * 1e3, "model_load_ms": model_s * 1e3,
                    "search_ms": search_ms, "ms": search_ms,
                    "hits": [{"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata} for h in hits]})
        return
    for rank, h in enumerate(hits, 1):
        text = " ".join(h.text.split())
        click.echo(f"{rank:>3}. {h.score:.4f}  [{h.id}]  {text[:110]}{'…' if len(text) > 110 else ''}")
    info(f"{len(hits)} hits in {search_ms:.1f} ms ({mode} search; query encoded with {backend}; loading took "
         f"{index_s:.1f} s for the index, {model_s:.1f} s for the model)")


def _rescore_text(rescore) -> str:
    return f"float16 rescoring x{rescore}" if rescore else "no rescoring"


@command(index, name="eval")
@click.argument("index_dir")
@option("--queries", "queries", aliases=(), default=None, metavar="FILE", help="queries.jsonl[.gz] (BEIR format).")
@option("--qrels", "qrels", aliases=("-r",), default=None, metavar="FILE", help="qrels TSV (query-id, corpus-id, score).")
@click.option("--beir", default=None, metavar="DIR", help="A BEIR folder instead of --queries/--qrels.")
@click.option("--split", default="test", show_default=True, help="qrels split with --beir.")
@model_option(help="Encoder for the queries (default: the model the index was built with).")
@click.option("--force", is_flag=True, help="Evaluate with a model other than the index's.")
@_MODE_OPTION
@_WHERE_OPTION
@json_option
def eval_(index_dir, queries, qrels, beir, split, model, device, force, mode, where, as_json):
    """nDCG@10, Recall@100, MRR@10, bytes/vector, size on disk, p50 latency and batch QPS.

    Python: ``embedkit.evaluation.retrieval.evaluate_index(index, queries, qrels)``.

    \b
    Example:
      embedkit index eval scifact_idx --beir ../shared/data/retrieval/scifact
      embedkit index eval scifact_idx --queries queries.jsonl --qrels qrels/test.tsv --json
    """
    from embedkit.data import read_beir, read_qrels, read_queries
    from embedkit.evaluation.retrieval import evaluate_index

    if beir:
        if queries or qrels:
            raise EmbedkitError("give either --beir FOLDER or --queries and --qrels, not both")
        check_input(beir, "--beir", kind="dir")
        ds = read_beir(beir, split, on_empty="keep")  # blank documents: judged, but not in the index
        qmap, qrel_map = ds.queries, ds.qrels
        if not qrel_map:
            from pathlib import Path

            splits = sorted(p.name.split(".")[0] for p in (Path(beir) / "qrels").glob("*.tsv*"))
            raise EmbedkitError(f"--beir {beir}: no judgements for split {split!r} (qrels/{split}.tsv is missing or "
                                f"empty); " + (f"its qrels splits: {', '.join(splits)} (--split)" if splits
                                               else "a BEIR folder needs qrels/SPLIT.tsv"))
    else:
        if not (queries and qrels):
            raise EmbedkitError("give --queries and --qrels, or --beir FOLDER")
        check_input(queries, "--queries", kind="file")
        check_input(qrels, "--qrels", kind="file")
        qmap = read_queries(queries)
        qrel_map = read_qrels(qrels)  # format checked before anything is loaded
    judged = {q: r for q, r in qrel_map.items() if q in qmap}
    if not judged:
        raise EmbedkitError(f"no query in the qrels has a text in the queries file ({qrels or beir})")
    check_model(model)
    where = _check_where(where)

    def judged_documents_known(idx):
        if not beir:  # judgements naming documents the index never held (blank documents it skipped are known)
            judged_docs = sorted({d for rel in qrel_map.values() for d in rel})
            known = set(idx.present_ids(judged_docs)) | set(idx.skipped_ids)
            read_qrels(qrels, doc_ids=known)

    idx, _, _ = _load_index(index_dir, model, device, force, check=judged_documents_known)
    res = evaluate_index(idx, qmap, judged, path=index_dir, show_progress=show_progress(), mode=mode, where=where)
    if as_json:
        print_json(res)
        return
    click.echo(f"index {index_dir}: {res['documents']} documents, spec {res['spec']}, index type {res['index_type']}, "
               f"{_rescore_text(res['rescore'])}; {mode} search, queries encoded with {res['backend']}")
    click.echo(f"  nDCG@10     {res['ndcg@10']:.4f}")
    click.echo(f"  Recall@100  {res['recall@100']:.4f}")
    click.echo(f"  MRR@10      {res['mrr@10']:.4f}")
    click.echo(f"  bytes/vector {res['bytes_per_vector']}  (index on disk {fmt_bytes(res['index_bytes_on_disk'])}, "
               f"without docstore {fmt_bytes(res['index_bytes_without_docs'])})")
    click.echo(f"  latency p50 {res['p50_ms']:.3f} ms/query, batch {res['batch_qps']:.0f} QPS ({res['queries']} queries)")


index.add_command(tune_command)
