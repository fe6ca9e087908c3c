"""``embedkit encode``: corpus -> resumable float embedding shards."""

from __future__ import annotations

import click

from embedkit.cli._common import info, json_option, model_option, print_json, read_corpus


@click.command()
@model_option
@click.option("--input", "-i", "input_", required=True, help="BEIR folder, corpus.jsonl[.gz] or .txt[.gz] (one text per line).")
@click.option("--out", "-o", required=True, help="Output folder for shard-NNNNN.npy + manifest.json.")
@click.option("--shard-size", type=int, default=4096, show_default=True, help="Texts per shard (a kill loses at most one).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@json_option
def encode(model, input_, out, shard_size, batch_size, as_json):
    """Encode a corpus into float32 .npy shards; rerun the same command to resume after a kill.

    \b
    Example:
      embedkit encode --input ../shared/data/retrieval/scifact --out scifact_emb
    """
    from embedkit.encoding import encode_to_shards
    from embedkit.models.loading import load_encoder

    _, texts, _ = read_corpus(input_)
    enc = load_encoder(model)
    manifest = encode_to_shards(enc, texts, out, shard_size=shard_size, batch_size=batch_size)
    if as_json:
        print_json(manifest)
    else:
        info(f"resumed {manifest['resumed_shards']} complete shard(s)" if manifest["resumed_shards"] else "")
        click.echo(f"{manifest['count']} embeddings ({manifest['dim']}-d) in {manifest['shards']} shard(s) under {out}")
