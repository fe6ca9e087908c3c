"""``embedkit lbl2vec fit|predict|search``: topics from keywords, no labelled data."""

from __future__ import annotations

import time
from pathlib import Path

import click

from embedkit.cli._common import info, json_option, print_json


@click.group()
def lbl2vec():
    """Classify and retrieve documents for topics described by a few keywords (Lbl2Vec).

    \b
    Keyword file: one label per line, label<TAB>kw1 kw2 ... (a 'label' header line is skipped).
    Documents: label<TAB>text .tsv[.gz] (labels are used only to report F1), or .txt[.gz] lines,
    or a BEIR folder / corpus.jsonl.
    \b
    Example:
      embedkit lbl2vec fit --docs ../shared/data/topics/ag_news/test.tsv \\
          --keywords ../shared/data/topics/ag_news/keywords_lbl2vec.tsv --min-count 5 --min-num-docs 100 \\
          --similarity-threshold 0.3 --out ag_l2v
      embedkit lbl2vec search ag_l2v --label 2 -k 5
      embedkit lbl2vec predict ag_l2v --docs new_docs.txt --json
    """


def _read_docs(path: str) -> tuple[list[str], list[str], list[str] | None]:
    """(ids, texts, gold labels or None)."""
    name = Path(path).name
    if name.endswith((".tsv", ".tsv.gz")):
        from embedkit.data import read_labelled_tsv

        gold, texts = read_labelled_tsv(path)
        return [str(i + 1) for i in range(len(texts))], texts, gold
    from embedkit.cli._common import read_corpus

    ids, texts, _ = read_corpus(path)
    return ids, texts, None


def _quality(gold: list[str], pred, scores, label_names: list[str]) -> dict | None:
    """Accuracy, macro-F1 and per-label ROC AUC when the gold labels are the model's labels."""
    if gold is None or not set(gold) <= set(label_names):
        return None
    import numpy as np
    from sklearn.metrics import f1_score, roc_auc_score

    gold_a = np.asarray(gold, dtype=object)
    out = {"accuracy": float(np.mean(gold_a == np.asarray(pred, dtype=object))),
           "macro_f1": float(f1_score(gold, list(pred), average="macro", labels=label_names, zero_division=0))}
    auc = {}
    for j, name in enumerate(label_names):
        y = gold_a == name
        if 0 < y.sum() < len(y):
            auc[name] = float(roc_auc_score(y, scores[:, j]))
    out["roc_auc"] = auc
    return out


@lbl2vec.command()
@click.option("--docs", "-d", required=True, help="Documents to fit on (see the group help for formats).")
@click.option("--keywords", "-k", "keywords_file", required=True, help="Keyword file: label<TAB>kw1 kw2 ...")
@click.option("--out", "-o", required=True, help="Model folder to write (replaced atomically).")
@click.option("--encoder", "-e", default="doc2vec", show_default=True,
              help="'doc2vec' (Lbl2Vec), 'default' (all-MiniLM-L6-v2) or a sentence-transformers folder/name.")
@click.option("--extra", multiple=True, help="Extra unlabelled .txt[.gz] text (one document per line); repeatable.")
@click.option("--similarity-threshold", type=float, default=None, help="Keep documents above this cosine to the keywords.")
@click.option("--similarity-threshold-offset", type=float, default=0.0, show_default=True)
@click.option("--min-num-docs", type=int, default=1, show_default=True, help="At least this many documents per label.")
@click.option("--max-num-docs", type=int, default=None, help="At most this many documents per label.")
@click.option("--clean-outliers", is_flag=True, help="Drop LocalOutlierFactor outliers before averaging.")
@click.option("--vector-size", type=int, default=300, show_default=True, help="Doc2Vec only.")
@click.option("--window", type=int, default=15, show_default=True, help="Doc2Vec only.")
@click.option("--min-count", type=int, default=50, show_default=True, help="Doc2Vec only; lower it for small corpora.")
@click.option("--sample", type=float, default=1e-5, show_default=True, help="Doc2Vec only.")
@click.option("--negative", type=int, default=5, show_default=True, help="Doc2Vec only.")
@click.option("--hs", type=click.IntRange(0, 1), default=1, show_default=True, help="Doc2Vec only; 0 halves fit time but scored far worse in bench/lbl2vec.py.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Doc2Vec only.")
@click.option("--workers", type=int, default=None, help="Doc2Vec threads (default: all cores).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--unknown-keywords", type=click.Choice(["warn", "error", "ignore"]), default="warn", show_default=True)
@json_option
def fit(docs, keywords_file, out, encoder, extra, similarity_threshold, similarity_threshold_offset, min_num_docs,
        max_num_docs, clean_outliers, vector_size, window, min_count, sample, negative, hs, epochs, workers, seed,
        unknown_keywords, as_json):
    """Fit label vectors from keywords and save the model folder."""
    import warnings

    from embedkit.data import read_text_lines
    from embedkit.topics import Lbl2TransformerVec, Lbl2Vec, read_keywords

    label_names, keywords = read_keywords(keywords_file)
    _, texts, gold = _read_docs(docs)
    extra_texts = [t for path in extra for t in read_text_lines(path)]
    info(f"{len(texts)} documents, {len(extra_texts)} extra, {len(label_names)} labels")
    common = dict(similarity_threshold=similarity_threshold, similarity_threshold_offset=similarity_threshold_offset,
                  min_num_docs=min_num_docs, max_num_docs=max_num_docs, clean_outliers=clean_outliers)
    if encoder == "doc2vec":
        model = Lbl2Vec(keywords, label_names, vector_size=vector_size, window=window, min_count=min_count,
                        sample=sample, negative=negative, hs=hs, epochs=epochs, workers=workers, seed=seed,
                        unknown_keywords=unknown_keywords, **common)
    else:
        model = Lbl2TransformerVec(keywords, label_names, model=None if encoder == "default" else encoder,
                                   show_progress=True, **common)
    t = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(texts, extra_documents=extra_texts or None)
    for w in caught:
        info(f"warning: {w.message}")
    seconds = time.perf_counter() - t
    model.save(out)
    scores = model.training_scores()
    pred = model.predict()
    summary = {
        "out": out, "kind": model._kind, "documents": len(texts), "extra_documents": len(extra_texts),
        "labels": label_names, "fit_seconds": seconds,
        "docs_per_label": {n: len(i) for n, i in zip(model.label_names_, model.label_doc_indices_)},
        "unknown_keywords": model.unknown_keywords_,
    }
    quality = _quality(gold, pred, scores, model.label_names_)
    if quality:
        summary["training_documents"] = quality
    if as_json:
        print_json(summary)
        return
    click.echo(f"fitted {model._kind} Lbl2Vec on {len(texts)} documents in {seconds:.1f} s -> {out}")
    for n in model.label_names_:
        click.echo(f"  {n}: label vector from {summary['docs_per_label'][n]} documents")
    if quality:
        click.echo(f"  on these documents: accuracy {quality['accuracy']:.3f}, macro-F1 {quality['macro_f1']:.3f}")


def _load(model_dir, model):
    from embedkit.topics import load_lbl2vec
    from embedkit.topics.lbl2vec import _read_manifest

    _, manifest = _read_manifest(model_dir)
    return load_lbl2vec(model_dir, model=model) if manifest.get("kind") == "transformer" and model else load_lbl2vec(model_dir)


@lbl2vec.command()
@click.argument("model_dir")
@click.option("--docs", "-d", default=None, help="Documents to classify (default: the training documents).")
@click.option("--model", "-m", default=None, help="Encoder to use instead of the stored one (transformer models).")
@json_option
def predict(model_dir, docs, model, as_json):
    """Label each document with its most similar topic (cosine to the label vectors)."""
    m = _load(model_dir, model)
    if docs is None:
        texts, gold = m.documents_ or [], None
        scores = m.training_scores()
        ids = [str(i + 1) for i in range(len(scores))]
    else:
        ids, texts, gold = _read_docs(docs)
        scores = m.decision_function(texts)
    best = scores.argmax(axis=1)
    labels = [m.label_names_[j] for j in best]
    quality = _quality(gold, labels, scores, m.label_names_)
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
        info(f"accuracy {quality['accuracy']:.3f}, macro-F1 {quality['macro_f1']:.3f} against the file's labels")


@lbl2vec.command()
@click.argument("model_dir")
@click.option("--label", "-l", required=True, help="Label to retrieve documents for.")
@click.option("-k", default=10, show_default=True, help="Number of documents.")
@json_option
def search(model_dir, label, k, as_json):
    """The training documents most similar to one label."""
    m = _load(model_dir, None)
    hits = m.search(label, k=k)
    docs = m.documents_ or []
    if as_json:
        print_json({"label": label, "hits": [{"index": i, "id": str(i + 1), "score": s,
                                               "text": docs[i] if i < len(docs) else None} for i, s in hits]})
        return
    for rank, (i, s) in enumerate(hits, 1):
        text = " ".join(docs[i].split()) if i < len(docs) else ""
        click.echo(f"{rank:>3}. {s:.4f}  [{i + 1}]  {text[:100]}{'…' if len(text) > 100 else ''}")
