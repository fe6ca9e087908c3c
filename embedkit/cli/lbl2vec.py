"""``embedkit lbl2vec fit|predict|search``: topics from keywords, no labelled data."""

from __future__ import annotations

import time
from pathlib import Path

import click

from embedkit.cli._common import (
    CTX,
    NON_NEGATIVE,
    POSITIVE,
    FiniteFloat,
    check_input,
    check_model,
    command,
    corpus_option,
    info,
    json_option,
    load_model,
    model_option,
    option,
    prepare_output,
    print_json,
    show_progress,
)

DOCS_HELP = "label<TAB>text .tsv[.gz] (labels only score the result), text lines, corpus.jsonl or a BEIR folder."


class _MinDocs(click.ParamType):
    """``auto`` or a whole number >= 1."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        elif str(value).strip().lower() == "auto":
            return "auto"
        else:
            try:
                n = int(str(value))
            except ValueError:
                self.fail(f"{value!r} is not 'auto' or a whole number", param, ctx)
        if n < 1:
            self.fail(f"{n} must be >= 1 (or 'auto')", param, ctx)
        return n


@click.group(context_settings=CTX)
def lbl2vec():
    """Classify and retrieve documents for topics described by a few keywords (Lbl2Vec).

    \b
    Keyword file: one label per line, label<TAB>kw1 kw2 ... or label<TAB>name<TAB>kw1 kw2 ...
    (a 'label' header line is skipped).
    Documents (--corpus): label<TAB>text .tsv[.gz] (the labels are used only to report F1), or
    .txt[.gz] lines, or a BEIR folder / corpus.jsonl.
    \b
    Example:
      embedkit lbl2vec fit --corpus ../shared/data/topics/ag_news/test.tsv \\
          --keywords ../shared/data/topics/ag_news/keywords_lbl2vec.tsv --min-count 5 --out ag_l2v
      embedkit lbl2vec search ag_l2v --label Sports -k 5
      embedkit lbl2vec predict ag_l2v --corpus new_docs.txt --json
    """


def _read_docs(path: str) -> tuple[list[str], list[str], list[str] | None]:
    """(ids, texts, gold labels or None): a labelled TSV carries labels, any other corpus does not."""
    from embedkit.data import read_corpus, read_labelled_tsv

    if Path(path).name.endswith((".tsv", ".tsv.gz")):
        gold, texts = read_labelled_tsv(path)
        return [str(i + 1) for i in range(len(texts))], texts, gold
    ids, texts, _ = read_corpus(path)
    return ids, texts, None


def _quality(model, gold, pred, scores) -> dict | None:
    """Accuracy, macro-F1 and per-label ROC AUC when the documents' labels are the model's labels."""
    from embedkit.topics import score_labels

    if gold is None or not set(gold) <= set(model.label_names_):
        return None
    return score_labels(gold, list(pred), model.label_names_, scores=scores)


def _shown(model, label: str) -> str:
    names = list(getattr(model, "display_names_", None) or model.label_names_)
    d = names[model.label_names_.index(label)]
    return label if d == label else f"{label} ({d})"


@command(lbl2vec)
@corpus_option(aliases=("--docs", "-d"), help="Documents to fit on: " + DOCS_HELP)
@click.option("--keywords", "keywords_file", required=True, metavar="FILE", help="Keyword file: label<TAB>kw1 kw2 ...")
@option("--out", "-o", "out", required=True, metavar="DIR", help="Model folder to write (a new or empty folder).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier embedkit Lbl2Vec model at --out.")
@model_option(default="doc2vec", show_default=True, aliases=("--encoder", "-e"),
              help="'doc2vec' (Lbl2Vec), 'default' (all-MiniLM-L6-v2) or a sentence-transformers folder/name "
                   "(Lbl2TransformerVec).")
@option("--extra", multiple=True, metavar="FILE", help="Extra unlabelled .txt[.gz] text (one document per line); repeatable.")
@click.option("--similarity-threshold", type=FiniteFloat(-1.0, 1.0), default=None,
              help="Keep documents above this cosine to the keywords.")
@click.option("--similarity-threshold-offset", type=FiniteFloat(), default=0.0, show_default=True)
@click.option("--min-num-docs", type=_MinDocs(), default="auto", show_default=True,
              help="At least this many documents per label vector; auto: half the documents per label (documents / labels / 2).")
@click.option("--max-num-docs", type=POSITIVE, default=None, help="At most this many documents per label.")
@click.option("--clean-outliers", is_flag=True, help="Drop LocalOutlierFactor outliers before averaging.")
@click.option("--vector-size", type=POSITIVE, default=300, show_default=True, help="Doc2Vec only.")
@click.option("--window", type=POSITIVE, default=15, show_default=True, help="Doc2Vec only.")
@click.option("--min-count", type=POSITIVE, default=50, show_default=True, help="Doc2Vec only; lower it for small corpora.")
@click.option("--sample", type=FiniteFloat(0.0), default=1e-5, show_default=True, help="Doc2Vec only.")
@click.option("--negative", type=NON_NEGATIVE, default=5, show_default=True, help="Doc2Vec only.")
@click.option("--hs", type=click.IntRange(0, 1), default=1, show_default=True, help="Doc2Vec only; 0 halves fit time but scored far worse in bench/lbl2vec.py.")
@click.option("--epochs", type=POSITIVE, default=10, show_default=True, help="Doc2Vec only.")
@click.option("--workers", type=POSITIVE, default=None, help="Doc2Vec threads (default: all cores).")
@click.option("--seed", type=NON_NEGATIVE, default=0, show_default=True)
@click.option("--unknown-keywords", type=click.Choice(["warn", "error", "ignore"]), default="warn", show_default=True)
@json_option
def fit(corpus, keywords_file, out, overwrite, model, device, extra, similarity_threshold, similarity_threshold_offset,
        min_num_docs, max_num_docs, clean_outliers, vector_size, window, min_count, sample, negative, hs, epochs,
        workers, seed, unknown_keywords, as_json):
    """Fit label vectors from keywords and save the model folder.

    \b
    Example:
      embedkit lbl2vec fit --corpus docs.tsv --keywords keywords.tsv --out topics_l2v --min-count 5
      embedkit lbl2vec fit --corpus docs.tsv --keywords keywords.tsv --out topics_l2tv -m default
    """
    import warnings

    from embedkit.data import read_keywords, read_text_lines
    from embedkit.topics import Lbl2TransformerVec, Lbl2Vec

    # cheap checks first
    check_input(corpus, "--corpus")
    check_input(keywords_file, "--keywords", kind="file")
    for path in extra:
        check_input(path, "--extra", kind="file")
    target = prepare_output(out, "lbl2vec", overwrite=overwrite, inputs=[corpus, keywords_file, *extra])
    transformer = model != "doc2vec"
    if transformer and model != "default":
        check_model(model)
    kw = read_keywords(keywords_file)
    _, texts, gold = _read_docs(corpus)
    extra_texts = [t for path in extra for t in read_text_lines(path)]
    info(f"{len(texts)} documents, {len(extra_texts)} extra, {len(kw)} labels")
    common = dict(similarity_threshold=similarity_threshold, similarity_threshold_offset=similarity_threshold_offset,
                  min_num_docs=min_num_docs, max_num_docs=max_num_docs, clean_outliers=clean_outliers)
    if not transformer:
        m = Lbl2Vec(kw, vector_size=vector_size, window=window, min_count=min_count, sample=sample,
                    negative=negative, hs=hs, epochs=epochs, workers=workers, seed=seed,
                    unknown_keywords=unknown_keywords, **common)
    else:
        name = None if model == "default" else model
        encoder = load_model(name, device) if device is not None else name
        m = Lbl2TransformerVec(kw, model=encoder, show_progress=show_progress(), **common)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.fit(texts, extra_documents=extra_texts or None)
    for w in caught:
        info(f"warning: {w.message}")
    seconds = time.perf_counter() - t
    m.save(target, overwrite=overwrite)
    scores = m.training_scores()
    pred = m.predict()
    summary = {
        "out": out, "kind": "transformer" if transformer else "doc2vec", "documents": len(texts),
        "extra_documents": len(extra_texts), "labels": list(m.label_names_),
        "display_names": list(getattr(m, "display_names_", None) or m.label_names_), "fit_seconds": seconds,
        "docs_per_label": {n: len(i) for n, i in zip(m.label_names_, m.label_doc_indices_)},
        "min_num_docs": m.min_num_docs_,
        "unknown_keywords": m.unknown_keywords_,
    }
    quality = _quality(m, gold, pred, scores)
    if quality:
        summary["training_documents"] = quality
    if as_json:
        print_json(summary)
        return
    click.echo(f"fitted {summary['kind']} Lbl2Vec on {len(texts)} documents in {seconds:.1f} s -> {out} "
               f"(min_num_docs {'auto = ' if min_num_docs == 'auto' else ''}{m.min_num_docs_})")
    for n in m.label_names_:
        click.echo(f"  {_shown(m, n)}: label vector from {summary['docs_per_label'][n]} documents")
    if quality:
        click.echo(f"  on these documents: accuracy {quality['accuracy']:.3f}, macro-F1 {quality['macro_f1']:.3f}")


def _load(model_dir, model, device):
    from embedkit.topics import load_lbl2vec

    if model is None and device is None:
        return load_lbl2vec(model_dir)
    check_model(model)
    return load_lbl2vec(model_dir, model=load_model(model, device) if device is not None else model)


@command(lbl2vec)
@click.argument("model_dir")
@corpus_option(required=False, aliases=("--docs", "-d"),
               help="Documents to classify (default: the training documents): " + DOCS_HELP)
@model_option(help="Encoder to use instead of the stored one (transformer models only).")
@json_option
def predict(model_dir, corpus, model, device, as_json):
    """Label each document with its most similar topic (cosine to the label vectors).

    With a labelled .tsv as --corpus, accuracy and macro-F1 against its labels are reported too.

    \b
    Example:
      embedkit lbl2vec predict ag_l2v --corpus new_docs.txt
      embedkit lbl2vec predict ag_l2v --corpus test.tsv --json     # with accuracy and macro-F1
    """
    if corpus is not None:
        check_input(corpus, "--corpus")
    m = _load(model_dir, model, device)
    if corpus is None:
        texts, gold = m.documents_ or [], None
        scores = m.training_scores()
        ids = [str(i + 1) for i in range(len(scores))]
    else:
        ids, texts, gold = _read_docs(corpus)
        scores = m.decision_function(texts)
    best = scores.argmax(axis=1)
    labels = [m.label_names_[j] for j in best]
    quality = _quality(m, gold, labels, scores)
    if as_json:
        rows = [{"id": i, "label": lab, "score": float(scores[r, best[r]]),
                 "scores": {n: float(scores[r, j]) for j, n in enumerate(m.label_names_)}}
                for r, (i, lab) in enumerate(zip(ids, labels))]
        out = {"labels": m.label_names_, "predictions": rows}
        if quality:
            out["quality"] = quality
        print_json(out)
        return
    for r, (i, lab) in enumerate(zip(ids, labels)):
        text = " ".join(texts[r].split()) if r < len(texts) else ""
        click.echo(f"{i}\t{lab}\t{scores[r, best[r]]:.4f}\t{text[:90]}{'…' if len(text) > 90 else ''}")
    if quality:
        click.echo(f"accuracy {quality['accuracy']:.3f}, macro-F1 {quality['macro_f1']:.3f} against the file's labels "
                   f"({quality['n']} documents)", err=True)


@command(lbl2vec)
@click.argument("model_dir")
@click.option("--label", "-l", required=True, help="Label (or its display name) to retrieve documents for.")
@click.option("-k", "k", type=POSITIVE, default=10, show_default=True, help="Number of documents.")
@json_option
def search(model_dir, label, k, as_json):
    """The training documents most similar to one label.

    \b
    Example:
      embedkit lbl2vec search ag_l2v --label Sports -k 5
    """
    m = _load(model_dir, None, None)
    hits = m.search(label, k=k)
    docs = m.documents_ or []
    if as_json:
        print_json({"label": label, "hits": [{"index": i, "id": str(i + 1), "score": s,
                                               "text": docs[i] if i < len(docs) else None} for i, s in hits]})
        return
    for rank, (i, s) in enumerate(hits, 1):
        text = " ".join(docs[i].split()) if i < len(docs) else ""
        click.echo(f"{rank:>3}. {s:.4f}  [{i + 1}]  {text[:100]}{'…' if len(text) > 100 else ''}")
