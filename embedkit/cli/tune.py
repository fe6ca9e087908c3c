"""``embedkit index tune`` and ``embedkit index build --budget-bytes``: index building by budget."""

from __future__ import annotations

import time

import click

from embedkit.cli._common import (
    POSITIVE,
    POSITIVE_FLOAT,
    batch_size_option,
    check_input,
    check_model,
    command,
    corpus_option,
    info,
    json_option,
    load_model,
    model_option,
    prepare_output,
    print_json,
    show_progress,
)
from embedkit.errors import EmbedkitError

BUDGET_OPTIONS = (
    click.option("--budget-bytes", type=POSITIVE_FLOAT, default=None, metavar="B",
                 help="Bytes per vector: codes + float16 rescoring vectors + IVF/HNSW structure (docstore apart)."),
    click.option("--max-ram", default=None, metavar="SIZE",
                 help="RAM of the loaded index for the whole corpus, fixed costs included, e.g. 200MB, 1.5GiB."),
    click.option("--max-query-ms", type=POSITIVE_FLOAT, default=None, metavar="T",
                 help="p50 single-query search latency limit in ms (query encoding apart)."),
    click.option("--min-docs-per-s", type=POSITIVE_FLOAT, default=None, metavar="R",
                 help="Encoding throughput floor: only model sizes (a Matryoshka / Starbucks ladder's sub-models) "
                      "that encode at least R documents per second are candidates."),
)


def budget_options(f):
    for opt in reversed(BUDGET_OPTIONS):
        f = opt(f)
    return f


def check_budget(budget_bytes, max_ram):
    """``max_ram`` in bytes (None if not given); one line when neither budget is given or a size is bad."""
    from embedkit.retrieval.tune import parse_size

    if budget_bytes is None and max_ram is None:
        raise EmbedkitError("give a budget: --budget-bytes B (bytes per vector) or --max-ram SIZE (e.g. 200MB)")
    return None if max_ram is None else parse_size(max_ram, "--max-ram")


def _judgements(queries, qrels):
    from embedkit.data import read_qrels, read_queries

    if bool(queries) != bool(qrels):
        raise EmbedkitError("give --queries and --qrels together (or neither: quality is then agreement with exact "
                            "search on held-out documents)")
    if not queries:
        return None, None
    check_input(queries, "--queries", kind="file")
    check_input(qrels, "--qrels", kind="file")
    return read_queries(queries), read_qrels(qrels)


def _run_tuner(model, device, corpus, budget_bytes, max_ram, max_query_ms, qmap, qrel_map, sample, held_out,
               batch_size, min_docs_per_s=None):
    from embedkit.data import read_corpus
    from embedkit.retrieval.tune import tune

    ids, texts, meta = read_corpus(corpus)
    info(f"{len(texts)} documents from {corpus}; tuning on a sample")
    enc = load_model(model, device)
    result = tune(texts, ids, model=enc, budget_bytes=budget_bytes, max_ram=max_ram, max_query_ms=max_query_ms,
                  queries=qmap, qrels=qrel_map, max_docs=sample, n_queries=held_out, batch_size=batch_size,
                  show_progress=show_progress(), min_docs_per_s=min_docs_per_s)
    return result, (ids, texts, meta)


def _describe(result) -> str:
    b = result.best
    return (f"chosen: {b['label']} — {result.quality_metric} {b['quality']:.4f}, {b['bytes_per_vector']:g} B/vector "
            f"(code {b['code_bytes_per_vector']}, rescoring {b['rescore_bytes_per_vector']}), "
            f"query {b['query_ms']:.3f} ms; {result.settings['configurations_measured']} configurations measured "
            f"in {result.seconds:.1f} s")


_SAMPLE = click.option("--sample", type=POSITIVE, default=20000, show_default=True, metavar="N",
                       help="Documents indexed while tuning (a random sample of the corpus).")
_HELD_OUT = click.option("--held-out", type=POSITIVE, default=200, show_default=True, metavar="N",
                         help="Held-out documents used as queries (without --queries/--qrels).")


@command(name="tune")
@model_option
@corpus_option()
@budget_options
@click.option("--queries", default=None, metavar="FILE", help="queries.jsonl: judge by nDCG@10 on these instead.")
@click.option("--qrels", default=None, metavar="FILE", help="qrels TSV for --queries.")
@_SAMPLE
@_HELD_OUT
@click.option("-o", "--out", default=None, metavar="DIR", help="Report folder: tune.json and tune.png.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier report folder.")
@click.option("--all", "all_rows", is_flag=True, help="Print every measured configuration, not only the Pareto front.")
@batch_size_option()
@json_option
def tune_command(model, device, corpus, budget_bytes, max_ram, max_query_ms, min_docs_per_s, queries, qrels, sample,
                 held_out, out, overwrite, all_rows, batch_size, as_json):
    """Measure index configurations on a sample and print the Pareto table (quality, bytes, RAM, latency).

    Candidates: the model's trained sizes (its Matryoshka / Starbucks ladder), every compression
    family within the budget, float16 rescoring, flat / IVF / HNSW. Quality: agreement@10 with exact
    float search on held-out documents, or nDCG@10 with --queries/--qrels.

    \b
    Example:
      embedkit index tune -c ../shared/data/retrieval/scifact --budget-bytes 48 --max-query-ms 5 -o tune48
      embedkit index tune -c docs.jsonl --max-ram 200MB --json
    """
    from embedkit._io import atomic_directory, atomic_write_json, mark_output

    max_ram_b = check_budget(budget_bytes, max_ram)
    check_input(corpus, "--corpus")
    qmap, qrel_map = _judgements(queries, qrels)
    target = None if out is None else prepare_output(out, "tune-report", overwrite=overwrite,
                                                     inputs=[corpus, queries, qrels])
    check_model(model)
    result, _ = _run_tuner(model, device, corpus, budget_bytes, max_ram_b, max_query_ms, qmap, qrel_map, sample,
                           held_out, batch_size, min_docs_per_s)
    if target is not None:
        with atomic_directory(target) as tmp:
            atomic_write_json(tmp / "tune.json", result.to_dict())
            result.plot(tmp / "tune.png")
            mark_output(tmp, "tune-report")
    if as_json:
        print_json(result.to_dict())
        return
    click.echo(result.table(all_rows=all_rows))
    click.echo(_describe(result) + (f"; report in {out}" if out else ""))


def build_by_budget(*, model, device, corpus, target, out, budget_bytes, max_ram, max_query_ms, keyword, batch_size,
                    strict, as_json, min_docs_per_s=None):
    """``index build --budget-bytes``: tune on a sample, build the chosen configuration, record it (manifest ``tuning``)."""
    from embedkit.retrieval.index import directory_size

    ctx = click.get_current_context()
    given = [f"--{p.replace('_', '-')}" for p in ("spec", "index_type", "rescore", "nprobe", "ef_search", "nlist",
                                                  "embeddings", "fit_pairs")
             if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise EmbedkitError(f"{', '.join(given)} cannot be combined with --budget-bytes/--max-ram/--max-query-ms: "
                            "the tuner chooses them (use `embedkit index tune` to see its table)")
    max_ram_b = check_budget(budget_bytes, max_ram)
    t = time.perf_counter()
    result, (ids, texts, meta) = _run_tuner(model, device, corpus, budget_bytes, max_ram_b, max_query_ms, None, None,
                                            20000, 200, batch_size, min_docs_per_s)
    info(_describe(result))
    idx = result.build_index(texts, ids, meta, keyword=keyword, batch_size=batch_size, show_progress=show_progress(),
                             on_empty="error" if strict else "skip")
    idx.save(target)
    summary = {"out": out, "documents": len(idx), "spec": idx.compression.spec, "index_type": idx.index_type,
               "rescore": idx.rescore, "layers": result.best["layers"], "dim": result.best["dim"],
               "bytes_per_vector": idx.bytes_per_vector, "index_bytes_on_disk": directory_size(target),
               "build_seconds": time.perf_counter() - t, "tuning": idx.tuning}
    if as_json:
        print_json(summary)
    else:
        click.echo(f"built {out}: {len(idx)} documents, {result.best['label']} ({idx.bytes_per_vector} code B/vector), "
                   f"chosen by budget ({result.quality_metric} {result.best['quality']:.4f})")
