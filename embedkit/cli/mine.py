"""``embedkit mine``: positive-aware hard negatives for (query, positive) pairs."""

from __future__ import annotations

import click

from embedkit.cli._common import (
    POSITIVE,
    FiniteFloat,
    batch_size_option,
    check_input,
    check_model,
    check_spec,
    command,
    corpus_option,
    embedding_dim,
    info,
    json_option,
    load_model,
    local_model,
    model_option,
    option,
    prepare_output_file,
    print_json,
    show_progress,
)

#: the kind recorded beside the TSV (see :func:`embedkit._io.mark_output_file`)
OUTPUT_KIND = "triplets"


@command()
@model_option
@option("--pairs", "pairs", metavar="PATH",
        help="(query, positive document id) pairs: a BEIR folder (qrels/train.tsv) or a TSV 'query<TAB>doc_id'.")
@corpus_option(required=False, help="Documents to mine from (with --pairs): a BEIR folder, corpus.jsonl[.gz], or a "
                                    "text file with one document per line.")
@option("--sts", "sts", metavar="FILE",
        help="Instead of --pairs/--corpus: an STS TSV (score, sentence1, sentence2); pairs scoring >= --min-score "
             "become a->b and b->a, mined from the file's other sentences (NV-Embed's stage-2 STS data).")
@click.option("--min-score", type=FiniteFloat(), default=4.0, show_default=True,
              help="With --sts: the lowest score of a pair kept as a positive.")
@option("--out", "-o", "out", required=True, metavar="FILE",
        help="TSV to write: anchor, positive, negative_1 .. negative_N (texts).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier --out file.")
@click.option("--negatives", type=POSITIVE, default=7, show_default=True, help="Negatives per pair.")
@click.option("--max-positive-ratio", type=FiniteFloat(0.0, 1.0, low_open=True), default=0.95, show_default=True,
              help="TopK-PercPos: drop candidates scoring above this share of the query's weakest positive "
                   "(p - (1 - ratio) x |p|, so it stays below a negative positive score too).")
@click.option("--candidates", type=POSITIVE, default=None, help="Top documents considered per query [4 x negatives + 10].")
@click.option("--spec", default="float", show_default=True,
              help="Index spec that finds the candidates (float: exact). Every candidate is then scored by float "
                   "cosine, the positive's scale, whatever the spec; a compressed spec only saves time and memory "
                   "on very large corpora and may miss candidates (add --rescore).")
@click.option("--rescore", type=POSITIVE, default=None,
              help="With a compressed --spec: search this many times more candidates, re-ranked in float16.")
@click.option("--split", default="train", show_default=True, help="qrels split when --pairs is a BEIR folder.")
@batch_size_option()
@json_option
def mine(model, device, pairs, corpus, sts, min_score, out, overwrite, negatives, max_positive_ratio, candidates, spec,
         rescore, split, batch_size, as_json):
    """Mine hard negatives, dropping near-positives (NV-Retriever's TopK-PercPos), with embedkit's index.

    Candidates are scored by float cosine whatever --spec; a query with several positives is
    thresholded on its weakest one.

    \b
    Examples:
      embedkit mine --pairs ../shared/data/retrieval/scifact --corpus ../shared/data/retrieval/scifact \\
          --negatives 7 --out scifact_triplets.tsv
      embedkit mine --sts ../shared/data/sts/stsb.train.tsv --negatives 3 --out stsb_triplets.tsv
    """
    from embedkit._io import mark_output_file
    from embedkit.data import is_blank, read_corpus, read_retrieval_pairs
    from embedkit.training.mining import mine_hard_negatives, sts_pairs, write_triplets

    if sts is not None and (pairs is not None or corpus is not None):
        raise click.UsageError("give --sts FILE, or --pairs with --corpus, not both")
    if sts is None and (pairs is None or corpus is None):
        raise click.UsageError("give --pairs and --corpus (or --sts FILE)")
    check_input(pairs, "--pairs")
    check_input(corpus, "--corpus")
    check_input(sts, "--sts", kind="file")
    check_spec(spec)
    shape = check_model(model)
    prepare_output_file(out, kind=OUTPUT_KIND, overwrite=overwrite,
                        inputs=[pairs, corpus, sts, local_model(model)])
    if sts is not None:
        rows, ids, texts = sts_pairs(sts, min_score)
    else:
        c = read_corpus(corpus)
        rows = read_retrieval_pairs(pairs, doc_ids=c.ids, split=split)
        ids, texts = c.ids, c.texts
    check_spec(spec, dim=embedding_dim(shape), n_train=sum(not is_blank(t) for t in texts) or None)  # sizes, too
    info(f"{len(rows)} pairs, {len(ids)} documents")
    enc = load_model(model, device)
    mined = mine_hard_negatives(rows, ids, texts, enc, num_negatives=negatives,
                                max_positive_ratio=max_positive_ratio, candidates=candidates, spec=spec,
                                rescore=rescore, batch_size=batch_size, show_progress=show_progress())
    written = write_triplets(out, mined, dict(zip(ids, texts)))
    mark_output_file(out, OUTPUT_KIND)
    with open(written, "rb") as f:  # what the file holds: rows after its header (every row has the same columns)
        rows_written = max(sum(1 for _ in f) - 1, 0)
    width, n_pairs = max((len(x) for x in mined.negative_ids), default=0), len(mined.queries)
    stats = {**mined.stats, "out": str(out), "rows_written": rows_written, "negatives_per_row": width,
             "pairs_left_out": n_pairs - rows_written}
    if as_json:
        print_json(stats)
    else:
        left = (f"; {n_pairs - rows_written} of {n_pairs} pairs left out (fewer than {width} negatives "
                "survived the near-positive filter)" if rows_written < n_pairs else "")
        click.echo(f"wrote {out}: {rows_written} rows (anchor, positive, {width} negatives){left}; "
                   f"{stats['dropped_as_near_positive']} near-positive candidates dropped "
                   f"(score above {max_positive_ratio:g} x the weakest positive)")
