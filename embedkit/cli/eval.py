"""``embedkit eval mteb|local``: mteb scores for registered tasks or local files, under compression specs."""

from __future__ import annotations

import click

from embedkit.cli._common import (
    POSITIVE,
    batch_size_option,
    check_model,
    command,
    embedding_dim,
    info,
    json_option,
    load_model,
    model_option,
    option,
    prepare_output,
    print_json,
    show_progress,
)
from embedkit.errors import EmbedkitError

SPECS_HELP = ("Compression specs separated by ';' (a spec itself may contain commas), e.g. "
              "'float;int8;binary;mrl:128;mrl:128,binary'. float is always run first (the reference).")
LOCAL_HINT = ("score your own files offline instead: embedkit eval local --sts FILE.tsv --beir BEIR_DIR "
              "--classification LABELLED.tsv --clustering LABELLED.tsv")


def _specs_option(f):
    return option("--specs", "-s", "specs", aliases=("--spec",), default="float", show_default=True, metavar="SPECS",
                  help=SPECS_HELP)(f)


def _common_run_options(f):
    f = click.option("--overwrite", is_flag=True, help="Replace an earlier `embedkit eval` output at --out.")(f)
    f = option("--out", "-o", "out", aliases=("--output",), default=None, metavar="DIR",
               help="Write mteb's result files and summary.{json,md,png} into this new folder.")(f)
    f = batch_size_option()(f)
    f = click.option("--asymmetric-queries", is_flag=True,
                     help="Retrieval: keep queries float (after the spec's transforms), compress only documents.")(f)
    f = click.option("--no-cache", is_flag=True, help="Do not read or write the on-disk embedding cache.")(f)
    return f


@click.group("eval", context_settings={"help_option_names": ["-h", "--help"]})
def eval_group():
    """Score a model with mteb, on registered tasks or local files, under several compression specs.

    \b
    Every text is encoded once (through embedkit's embedding cache); every spec is then scored by
    mteb on the decoded compressed vectors. Output: a table of main scores per task and spec,
    mteb's own result files (--out), a summary JSON/markdown and a plot of score vs bytes/vector.

    \b
    Examples:
      embedkit eval local --sts ../shared/data/sts/stsb.test.tsv --beir ../shared/data/retrieval/scifact \\
          --specs "float;int8;binary;mrl:128;mrl:128,binary" --out eval_out
      embedkit eval mteb --tasks STSBenchmark,SciFact --specs "float;binary"   # needs the internet
    """


def _finish(result, out, as_json):
    from embedkit.evaluation.suite import summary_markdown

    if as_json:
        print_json(result)
        return
    click.echo(summary_markdown(result), nl=False)
    click.echo(f"({len(result['tasks'])} tasks x {len(result['specs'])} specs in {result['seconds']:.1f} s; "
               f"{result['texts_encoded']} distinct texts looked up)")
    if out is not None:
        click.echo(f"summary: {result['files']['markdown']}, {result['files']['json']}, plot {result['files']['plot']}; "
                   f"mteb results under {result['results_dir']}")


def _run(model, device, task_objs, spec_list, target, batch_size, asymmetric_queries, no_cache, as_json):
    from embedkit.evaluation.suite import run_suite, write_outputs

    enc = load_model(model, device)
    result = run_suite(enc, task_objs, spec_list, output=target, cache=False if no_cache else None,
                       batch_size=batch_size, show_progress=show_progress(), asymmetric_queries=asymmetric_queries)
    if target is not None:
        result["files"] = write_outputs(result, target)
    _finish(result, target, as_json)


@command(eval_group, "mteb")
@model_option
@click.option("--tasks", "-t", required=True, metavar="T1,T2", help="Registered MTEB task names, comma-separated (e.g. STSBenchmark,SciFact).")
@_specs_option
@_common_run_options
@json_option
def mteb_cmd(model, device, tasks, specs, out, overwrite, batch_size, asymmetric_queries, no_cache, as_json):
    """Run registered MTEB tasks (data from the Hugging Face Hub) through mteb.evaluate.

    \b
    Example:
      embedkit eval mteb --tasks STSBenchmark,SciFact --specs "float;int8;binary" --out eval_mteb
    """
    from embedkit.evaluation import check_hub_available, parse_specs, resolve_mteb_tasks

    spec_list = parse_specs(specs)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise EmbedkitError("--tasks is empty; give registered MTEB task names, e.g. --tasks STSBenchmark,SciFact")
    task_objs = resolve_mteb_tasks(names)  # the task registry ships with mteb: works offline
    check_hub_available()
    target = prepare_output(out, "eval", overwrite=overwrite) if out is not None else None
    spec_list = parse_specs(specs, dim=embedding_dim(check_model(model)))  # sizes too, before the model loads
    _run(model, device, task_objs, spec_list, target, batch_size, asymmetric_queries, no_cache, as_json)


@command(eval_group, "local")
@model_option
@click.option("--sts", multiple=True, metavar="FILE", help="STS TSV: header, then score<TAB>sentence1<TAB>sentence2 (repeatable).")
@click.option("--beir", multiple=True, metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (repeatable).")
@click.option("--classification", multiple=True, metavar="FILE", help="label<TAB>text TSV, split 50/50 per label (seed 42) (repeatable).")
@click.option("--clustering", multiple=True, metavar="FILE", help="label<TAB>text TSV (repeatable).")
@click.option("--limit", type=POSITIVE, default=None, metavar="N",
              help="Use at most N rows of each STS/classification/clustering file (deterministic subset).")
@click.option("--max-queries", type=POSITIVE, default=None, metavar="Q", help="BEIR: first Q judged queries.")
@click.option("--max-docs", type=POSITIVE, default=None, metavar="D", help="BEIR: judged documents plus the first others, D in all.")
@click.option("--split", default="test", show_default=True, help="BEIR qrels split.")
@_specs_option
@_common_run_options
@json_option
def local_cmd(model, device, sts, beir, classification, clustering, limit, max_queries, max_docs, split, specs, out,
              overwrite, batch_size, asymmetric_queries, no_cache, as_json):
    """Score local files as mteb STS, retrieval, classification and clustering tasks (works offline).

    \b
    Example:
      embedkit eval local --sts ../shared/data/sts/stsb.test.tsv --beir ../shared/data/retrieval/scifact \\
          --specs "float;int8;binary;mrl:128,binary" --out eval_out
    """
    from embedkit.evaluation import mteb_tasks as mt
    from embedkit.evaluation.suite import parse_specs

    spec_list = parse_specs(specs)
    if not (sts or beir or classification or clustering):
        raise EmbedkitError("give at least one of --sts FILE, --beir DIR, --classification FILE, --clustering FILE")
    inputs = [*sts, *beir, *classification, *clustering]
    target = prepare_output(out, "eval", overwrite=overwrite, inputs=inputs) if out is not None else None
    spec_list = parse_specs(specs, dim=embedding_dim(check_model(model)))  # sizes too, before the model loads
    tasks = [mt.sts_task(p, max_rows=limit) for p in sts]
    tasks += [mt.retrieval_task(p, split=split, max_queries=max_queries, max_docs=max_docs) for p in beir]
    tasks += [mt.classification_task(p, max_rows=limit) for p in classification]
    tasks += [mt.clustering_task(p, max_rows=limit) for p in clustering]
    mt.unique_names(tasks)
    info(f"{len(tasks)} tasks x {len(spec_list)} specs: {', '.join(t.metadata.name for t in tasks)}")
    _run(model, device, tasks, spec_list, target, batch_size, asymmetric_queries, no_cache, as_json)
