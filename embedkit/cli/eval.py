"""``embedkit eval mteb|local``: mteb scores for registered tasks or local files, under compression specs."""

from __future__ import annotations

import os

import click

from embedkit.cli._common import info, json_option, model_option, print_json
from embedkit.errors import EmbedkitError

SPECS_HELP = ("Compression specs separated by ';' (a spec may contain commas), e.g. "
              "'float;int8;binary;mrl:128;mrl:128,binary'. float is always run first (the reference).")
LOCAL_HINT = ("score your own files offline instead: embedkit eval local --sts FILE.tsv --beir BEIR_DIR "
              "--classification LABELLED.tsv --clustering LABELLED.tsv")


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _specs_option(f):
    return click.option("--specs", "-s", default="float", show_default=True, metavar="SPECS", help=SPECS_HELP)(f)


def _common_run_options(f):
    f = click.option("--output", "-o", default=None, metavar="DIR",
                     help="Write mteb's result files and summary.{json,md,png} here.")(f)
    f = click.option("--batch-size", type=int, default=64, show_default=True)(f)
    f = click.option("--asymmetric-queries", is_flag=True,
                     help="Retrieval: keep queries float (after the spec's transforms), compress only documents.")(f)
    f = click.option("--no-cache", is_flag=True, help="Do not read or write the on-disk embedding cache.")(f)
    return f


@click.group("eval")
def eval_group():
    """Score a model with mteb, on registered tasks or local files, under several compression specs.

    \b
    Every text is encoded once (through embedkit's embedding cache); every spec is then scored by
    mteb on the decoded compressed vectors. Output: a table of main scores per task and spec,
    mteb's own result files (--output), a summary JSON/markdown and a plot of score vs bytes/vector.

    \b
    Examples:
      embedkit eval local --sts ../shared/data/sts/stsb.test.tsv --beir ../shared/data/retrieval/scifact \\
          --specs "float;int8;binary;mrl:128;mrl:128,binary" --output eval_out
      embedkit eval mteb --tasks STSBenchmark,SciFact --specs "float;binary"   # needs the internet
    """


def _finish(result, output, as_json):
    from embedkit.evaluation.suite import summary_markdown, write_outputs

    if output is not None:
        result["files"] = write_outputs(result, output)
    if as_json:
        print_json(result)
        return
    click.echo(summary_markdown(result), nl=False)
    click.echo(f"({len(result['tasks'])} tasks x {len(result['specs'])} specs in {result['seconds']:.1f} s; "
               f"{result['texts_encoded']} distinct texts looked up)")
    if output is not None:
        click.echo(f"summary: {result['files']['markdown']}, {result['files']['json']}, plot {result['files']['plot']}; "
                   f"mteb results under {result['results_dir']}")


@eval_group.command("mteb")
@model_option
@click.option("--tasks", "-t", required=True, metavar="T1,T2", help="Registered MTEB task names, comma-separated (e.g. STSBenchmark,SciFact).")
@_specs_option
@_common_run_options
@json_option
def mteb_cmd(model, tasks, specs, output, batch_size, asymmetric_queries, no_cache, as_json):
    """Run registered MTEB tasks (data from the Hugging Face Hub) through mteb.evaluate."""
    from embedkit.evaluation.suite import parse_specs

    spec_list = parse_specs(specs)
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise EmbedkitError("--tasks is empty; give registered MTEB task names, e.g. --tasks STSBenchmark,SciFact")
    task_objs = resolve_mteb_tasks(names)  # the task registry ships with mteb: works offline
    if _hub_offline():
        raise EmbedkitError(
            "registered MTEB tasks download their data from the Hugging Face Hub, which is offline here "
            f"(HF_HUB_OFFLINE=1); {LOCAL_HINT}")
    _run(model, task_objs, spec_list, output, batch_size, asymmetric_queries, no_cache, as_json)


def resolve_mteb_tasks(names):
    """mteb task objects for registered names; an unknown name is an EmbedkitError naming it."""
    import difflib

    import mteb

    known = None
    out = []
    for n in names:
        try:
            out.extend(mteb.get_tasks(tasks=[n]))
        except KeyError:
            if known is None:
                known = [t.metadata.name for t in mteb.get_tasks()]
            close = difflib.get_close_matches(n, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; list them with: mteb available-tasks"
            raise EmbedkitError(f"unknown MTEB task {n!r}{hint}") from None
    return out


def _run(model, task_objs, spec_list, output, batch_size, asymmetric_queries, no_cache, as_json):
    from embedkit.evaluation.suite import run_suite
    from embedkit.models.loading import load_encoder

    enc = load_encoder(model)
    try:
        result = run_suite(enc, task_objs, spec_list, output=output, cache=False if no_cache else None,
                           batch_size=batch_size, show_progress=True, asymmetric_queries=asymmetric_queries)
    except EmbedkitError:
        raise
    except (ConnectionError, OSError) as e:  # hub unreachable, dataset not downloadable
        raise EmbedkitError(f"could not load an MTEB task's data ({type(e).__name__}: {e}); {LOCAL_HINT}") from e
    except Exception as e:
        if type(e).__name__ in ("DatasetNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "HfHubHTTPError"):
            raise EmbedkitError(f"could not load an MTEB task's data ({type(e).__name__}); {LOCAL_HINT}") from e
        raise
    _finish(result, output, as_json)


@eval_group.command("local")
@model_option
@click.option("--sts", multiple=True, metavar="FILE", help="STS TSV: header, then score<TAB>sentence1<TAB>sentence2 (repeatable).")
@click.option("--beir", multiple=True, metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (repeatable).")
@click.option("--classification", multiple=True, metavar="FILE", help="label<TAB>text TSV, split 50/50 per label (seed 42) (repeatable).")
@click.option("--clustering", multiple=True, metavar="FILE", help="label<TAB>text TSV (repeatable).")
@click.option("--limit", type=int, default=None, metavar="N",
              help="Use at most N rows of each STS/classification/clustering file (deterministic subset).")
@click.option("--max-queries", type=int, default=None, metavar="Q", help="BEIR: first Q judged queries.")
@click.option("--max-docs", type=int, default=None, metavar="D", help="BEIR: judged documents plus the first others, D in all.")
@click.option("--split", default="test", show_default=True, help="BEIR qrels split.")
@_specs_option
@_common_run_options
@json_option
def local_cmd(model, sts, beir, classification, clustering, limit, max_queries, max_docs, split, specs, output,
              batch_size, asymmetric_queries, no_cache, as_json):
    """Score local files as mteb STS, retrieval, classification and clustering tasks (works offline)."""
    from embedkit.evaluation import mteb_tasks as mt
    from embedkit.evaluation.suite import parse_specs

    spec_list = parse_specs(specs)
    if not (sts or beir or classification or clustering):
        raise EmbedkitError("give at least one of --sts FILE, --beir DIR, --classification FILE, --clustering FILE")
    tasks = [mt.sts_task(p, max_rows=limit) for p in sts]
    tasks += [mt.retrieval_task(p, split=split, max_queries=max_queries, max_docs=max_docs) for p in beir]
    tasks += [mt.classification_task(p, max_rows=limit) for p in classification]
    tasks += [mt.clustering_task(p, max_rows=limit) for p in clustering]
    mt.unique_names(tasks)
    info(f"{len(tasks)} tasks x {len(spec_list)} specs: {', '.join(t.metadata.name for t in tasks)}")
    _run(model, tasks, spec_list, output, batch_size, asymmetric_queries, no_cache, as_json)
