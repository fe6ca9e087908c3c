"""``embedkit debias``: hard-debias word vectors (a gensim/word2vec file, or extracted from an encoder)."""

from __future__ import annotations

from pathlib import Path

import click

from embedkit.cli._common import (
    check_input,
    check_model,
    command,
    json_option,
    load_model,
    local_model,
    model_option,
    option,
    prepare_output_file,
    print_json,
)

#: the kind recorded beside the vectors file (see :func:`embedkit._io.mark_output_file`)
OUTPUT_KIND = "vectors"


@command()
@option("--vectors", default=None, metavar="FILE",
        help="word2vec-format file (.txt text, .bin binary). Omit to extract word vectors from --model.")
@model_option(help="Sentence encoder to extract word vectors from (default: the bundled all-MiniLM-L6-v2).")
@click.option("--vocab", default=None, metavar="FILE",
              help="With --model: one word per line (default: the tokenizer's whole words + the list words).")
@click.option("--lists", "lists_dir", default=None, metavar="DIR",
              help="Folder with definitional_pairs.json, equalize_pairs.json, gender_specific_full.json, professions.json.")
@option("--out", "-o", "out", required=True, metavar="FILE", help="Debiased vectors, word2vec format (.bin = binary); a new file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@json_option
def debias(vectors, model, device, vocab, lists_dir, out, overwrite, as_json):
    """Hard-debias word vectors and report the direct gender bias before and after.

    Method: Bolukbasi, Chang, Zou, Saligrama and Kalai, NeurIPS 2016 (identify, neutralise, equalise).
    The bias is measured over the gender-neutral professions of the list (those not in the
    gender-specific list), as in `embedkit diagnose`.

    \b
    Example:
      embedkit debias --vectors w2v.txt --out w2v.debiased.txt
      embedkit debias --out minilm-words.debiased.bin        # words encoded by the default model
    """
    from embedkit._io import mark_output_file
    from embedkit.data import load_vectors, read_text_lines
    from embedkit.debias import HardDebias, direct_bias, load_word_lists
    from embedkit.debias.word_vectors import encoder_vocabulary, encoder_word_vectors

    if vectors is not None and model is not None:
        raise click.UsageError("give --vectors FILE or --model M, not both")
    check_input(vectors, "--vectors", kind="file")
    check_input(vocab, "--vocab", kind="file")
    check_input(lists_dir, "--lists", kind="dir")
    prepare_output_file(out, kind=OUTPUT_KIND, overwrite=overwrite,
                        inputs=[vectors, vocab, lists_dir, None if vectors else local_model(model)])
    if vectors is None:
        check_model(model)
    lists = load_word_lists(lists_dir)
    if vectors:
        kv = load_vectors(vectors)
    else:
        enc = load_model(model, device)
        words = read_text_lines(vocab) if vocab else encoder_vocabulary(enc)
        extra = [w for p in lists.definitional + lists.equalize for w in p] + lists.gender_specific + lists.professions
        kv = encoder_word_vectors(enc, list(dict.fromkeys(words + [w for w in extra if "_" not in w])))
    hd = HardDebias(lists.definitional, lists.equalize, lists.gender_specific).fit(kv)
    outkv = hd.transform(kv)
    _save_word2vec(outkv, out)
    mark_output_file(out, OUTPUT_KIND)
    specific = set(lists.gender_specific)
    prof = [w for w in lists.professions if w not in specific and w in kv.key_to_index]
    g = hd.bias_direction_
    summary = {"words": len(kv.index_to_key), "definitional_pairs_used": len(hd.definitional_pairs_used_),
               "equalized_pairs": len(hd.equalized_pairs_), "n_professions": len(prof),
               "direct_bias_before": direct_bias(kv, g, prof), "direct_bias_after": direct_bias(outkv, g, prof),
               "out": str(out)}
    if as_json:
        print_json(summary)
    else:
        click.echo(f"direct bias over {len(prof)} professions: {summary['direct_bias_before']:.4f} -> "
                   f"{summary['direct_bias_after']:.4f}; wrote {summary['words']} vectors to {out}")


def _save_word2vec(kv, out) -> None:
    """Write word2vec vectors atomically (temporary file beside ``out``, then rename)."""
    import os

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        kv.save_word2vec_format(str(tmp), binary=out.suffix == ".bin")
        from embedkit._io import file_mode

        os.chmod(tmp, file_mode())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
