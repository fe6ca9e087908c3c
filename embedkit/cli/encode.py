"""``embedkit encode``: corpus -> resumable float embedding shards."""

from __future__ import annotations

from pathlib import Path

import click

from embedkit.cli._common import (
    POSITIVE,
    batch_size_option,
    check_input,
    check_model,
    command,
    corpus_option,
    info,
    json_option,
    load_model,
    model_option,
    out_option,
    precision_option,
    prepare_output,
    print_json,
    show_progress,
)


def _precheck_out(out, corpus, overwrite):
    """The output checks that need no model: a folder embedkit did not write is refused now.

    A folder with a ``manifest.json`` is left to :func:`embedkit.encoding.encode_to_shards`, which
    compares it with the input and the model (resume, ``--overwrite``, or a one-line refusal).
    """
    from embedkit._io import output_kind

    p = Path(out)
    if p.is_dir() and (output_kind(p) == "shards" or (p / "manifest.json").is_file()):
        return
    prepare_output(out, "shards", overwrite=overwrite, inputs=[corpus])


@command()
@model_option
@corpus_option(aliases=("--input", "-i"))
@out_option(help="Folder for shard-NNNNN.npy + ids.json + manifest.json (a new or empty folder, or an earlier "
                 "`embedkit encode` folder of the same input: the run resumes it; --overwrite replaces one of "
                 "another input).")
@click.option("--shard-size", type=POSITIVE, default=4096, show_default=True, help="Texts per shard (a kill loses at most one).")
@batch_size_option()
@precision_option
@json_option
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Encode on Ray (pip install 'embedkit[ray]'): alone = local Ray or $RAY_ADDRESS; or a cluster address.")
@click.option("--shard", default=None, metavar="I/N", help="Encode only part I of N (I from 0); N runs fill one --out folder.")
def encode(model, device, corpus, out, overwrite, shard_size, batch_size, precision, as_json, ray_address, shard):
    """Encode a corpus into float32 .npy shards; rerun the same command to resume after a kill.

    \b
    Example:
      embedkit encode --corpus ../shared/data/retrieval/scifact --out scifact_emb
      embedkit encode --corpus big.jsonl.gz --out emb --shard 0/4      # one of 4 parts (e.g. a Slurm array job)
      embedkit encode --corpus big.jsonl.gz --out emb --ray             # on a local Ray or $RAY_ADDRESS
      embedkit encode --corpus docs.txt --out emb --backend openvino --precision bf16   # fastest on AVX-512 BF16 CPUs
    """
    from embedkit.data import read_corpus
    from embedkit.encoding import check_resume, encode_command, parse_partition

    parse_partition(shard)  # a bad --shard fails before anything is read
    check_input(corpus, "--corpus")
    _precheck_out(out, corpus, overwrite)
    check_model(model)
    ids, texts, _ = read_corpus(corpus)
    check_resume(out, texts, shard_size=shard_size, overwrite=overwrite)  # a folder it cannot resume: before the model
    enc = load_model(model, device, precision=precision)
    manifest = encode_command(enc, texts, out, ids=ids, ray=ray_address, shard=shard, shard_size=shard_size,
                              batch_size=batch_size, show_progress=show_progress(), overwrite=overwrite, inputs=[corpus])
    if not manifest.get("complete", True):
        info(f"part {shard} done; run the other parts to finish")
    if as_json:
        print_json(manifest)
    else:
        if manifest.get("resumed_shards"):
            info(f"resumed {manifest['resumed_shards']} complete shard(s)")
        click.echo(f"{manifest['count']} embeddings ({manifest['dim']}-d) in {manifest['shards']} shard(s) under {out}")
