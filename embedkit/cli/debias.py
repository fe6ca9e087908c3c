"""``embedkit debias``: hard-debias word vectors (a gensim/word2vec file, or extracted from an encoder)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from embedkit.errors import DataFormatError, EmbedkitError

CTX = {"help_option_names": ["-h", "--help"]}


def _load_vectors(path: str):
    from gensim.models import KeyedVectors

    p = Path(path)
    if not p.exists():
        raise DataFormatError(f"{p}: file not found")
    binary = p.suffix == ".bin"
    try:
        return KeyedVectors.load_word2vec_format(str(p), binary=binary)
    except (ValueError, UnicodeDecodeError, EOFError) as e:
        raise DataFormatError(f"{p}: not a word2vec {'binary' if binary else 'text'} file ({e})") from e


@click.command(context_settings=CTX)
@click.option("--vectors", type=click.Path(dir_okay=False), default=None,
              help="word2vec-format file (.txt text, .bin binary). Omit to extract from --model.")
@click.option("--model", "model_name", default=None, help="Sentence encoder to extract word vectors from (default model).")
@click.option("--vocab", type=click.Path(dir_okay=False), default=None,
              help="With --model: one word per line (default: the tokenizer's whole words + the list words).")
@click.option("--lists", "lists_dir", type=click.Path(file_okay=False), default=None,
              help="Folder with definitional_pairs.json, equalize_pairs.json, gender_specific_full.json, professions.json.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Debiased vectors, word2vec format (.bin = binary).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def debias(vectors, model_name, vocab, lists_dir, out, as_json):
    """Hard-debias word vectors and report the direct gender bias before and after.

    Method: Bolukbasi, Chang, Zou, Saligrama and Kalai, NeurIPS 2016 (identify, neutralise, equalise).

    \b
    Example:
      embedkit debias --vectors w2v.txt --out w2v.debiased.txt
      embedkit debias --out minilm-words.debiased.bin        # words encoded by the default model
    """
    from embedkit.debias import HardDebias, direct_bias, load_word_lists
    from embedkit.debias.word_vectors import encoder_vocabulary, encoder_word_vectors

    lists = load_word_lists(lists_dir)
    if vectors:
        kv = _load_vectors(vectors)
    else:
        from embedkit.data import read_text_lines
        from embedkit.models.loading import load_encoder

        model = load_encoder(model_name)
        words = read_text_lines(vocab) if vocab else encoder_vocabulary(model)
        extra = [w for p in lists.definitional + lists.equalize for w in p] + lists.gender_specific + lists.professions
        kv = encoder_word_vectors(model, list(dict.fromkeys(words + [w for w in extra if "_" not in w])))
    hd = HardDebias(lists.definitional, lists.equalize, lists.gender_specific).fit(kv)
    outkv = hd.transform(kv)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    outkv.save_word2vec_format(str(tmp), binary=Path(out).suffix == ".bin")
    tmp.replace(out)
    prof = [w for w in lists.professions if w not in set(lists.gender_specific)]
    g = hd.bias_direction_
    summary = {"words": len(kv.index_to_key), "definitional_pairs_used": len(hd.definitional_pairs_used_),
               "equalized_pairs": len(hd.equalized_pairs_), "direct_bias_before": direct_bias(kv, g, prof),
               "direct_bias_after": direct_bias(outkv, g, prof), "out": str(out)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"direct bias over {len(prof)} professions: {summary['direct_bias_before']:.4f} -> "
                   f"{summary['direct_bias_after']:.4f}; wrote {summary['words']} vectors to {out}")
