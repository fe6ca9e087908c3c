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
@option("--pairs", "pairs", required=True, metavar="PATH",
        help="(query, positive document id) pairs: a BEIR folder (qrels/train.tsv) or a TSV 'query<TAB>doc_id'.")
@corpus_option()
@option("--out", "-o", "out", required=True, metavar="FILE",
        help="TSV to write: anchor, positive, negative_1 .. negative_N (texts).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier --out file.")
@click.option("--negatives", type=POSITIVE, default=7, show_default=True, help="Negatives per pair.")
@click.option("--max-positive-ratio", type=FiniteFloat(0.0, 1.0, low_open=True), default=0.95, show_default=True,
              help="Drop candidates scoring above this share of the positive's score (TopK-PercPos).")
@click.option("--candidates", type=POSITIVE, default=None, help="Top documents considered per query [4 x negatives + 10].")
@click.option("--spec", default="float", show_default=True, help="Index spec for the candidate search (e.g. 'binary').")
@click.option("--rescore", type=POSITIVE, default=None, help="Oversampling factor for float16 rescoring.")
@click.option("--split", default="train", show_default=True, help="qrels split when --pairs is a BEIR folder.")
@batch_size_option()
@json_option
def mine(model, device, pairs, corpus, out, overwrite, negatives, max_positive_ratio, candidates, spec, rescore, split,
         batch_size, as_json):
    """Mine hard negatives, dropping near-positives (NV-Retriever's TopK-PercPos), with embedkit's index.

    \b
    Example:
      embedkit mine --pairs ../shared/data/retrieval/scifact --corpus ../shared/data/retrieval/scifact \\
          --negatives 7 --out scifact_triplets.tsv
    """
    from embedkit._io import mark_output_file
    from embedkit.data import is_blank, read_corpus, read_retrieval_pairs
    from embedkit.training.mining import mine_hard_negatives, write_triplets

    check_input(pairs, "--pairs")
    check_input(corpus, "--corpus")
    check_spec(spec)
    shape = check_model(model)
    prepare_output_file(out, kind=OUTPUT_KIND, overwrite=overwrite, inputs=[pairs, corpus, local_model(model)])
    c = read_corpus(corpus)
    rows = read_retrieval_pairs(pairs, doc_ids=c.ids, split=split)
    check_spec(spec, dim=embedding_dim(shape), n_train=sum(not is_blank(t) for t in c.texts) or None)  # sizes, too
    info(f"{len(rows)} pairs, {len(c.ids)} documents")
    enc = load_model(model, device)
    mined = mine_hard_negatives(rows, c.ids, c.texts, enc, num_negatives=negatives,
                                max_positive_ratio=max_positive_ratio, candidates=candidates, spec=spec,
                                rescore=rescore, batch_size=batch_size, show_progress=show_progress())
    written = write_triplets(out, mined, dict(zip(c.ids, c.texts)))
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
                   f"(score > {max_positive_ratio:g} x positive)")
