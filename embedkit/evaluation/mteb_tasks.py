"""Local files as mteb tasks: STS, retrieval (BEIR), classification and clustering.

Each function reads and validates its file immediately (a malformed file fails before any model is
loaded) and returns an instance of a subclass of mteb's own abstract task (``AbsTaskSTS``,
``AbsTaskRetrieval``, ``AbsTaskClassification``, ``AbsTaskClustering``) whose ``load_data`` turns
the rows into the datasets mteb expects. Scores are therefore mteb's own computations and results
are mteb ``TaskResult`` objects, written in mteb's format by ``mteb.evaluate(..., cache=ResultCache(DIR))``.

================  ==============================================  ===========================
function          file                                            main score (mteb)
================  ==============================================  ===========================
``sts_task``      TSV ``score<TAB>sentence1<TAB>sentence2``       ``cosine_spearman``
``retrieval_task`` BEIR folder (corpus.jsonl, queries.jsonl,      ``ndcg_at_10``
                  qrels/SPLIT.tsv)
``classification_task`` TSV ``label<TAB>text``                    ``accuracy``
``clustering_task`` TSV ``label<TAB>text``                        ``v_measure``
================  ==============================================  ===========================

Task names are ``Local<Type>-<file stem>`` (e.g. ``LocalSTS-stsb.test``); pass ``name=`` to choose.

Subsets (all deterministic):

* ``sts_task(max_rows=N)``: the first N pairs of the file.
* ``retrieval_task(max_queries=Q, max_docs=D)``: the first Q judged queries (file order), and a
  corpus of every document they judge plus the first documents of the corpus file, up to D in all.
* ``classification_task``: rows are split into train and test per label: the rows of each label
  are shuffled with ``numpy.random.default_rng(seed)`` (seed 42) and the first
  ``round(test_fraction * n_label)`` (default one half) become the test split. ``max_rows=N`` first
  keeps N rows, drawn per label in proportion (same shuffle), before splitting. mteb then trains
  its logistic regression ``n_experiments`` times (10) on ``samples_per_label`` (8, mteb's default)
  training rows per label and reports the mean test accuracy.
* ``clustering_task(max_rows=N)``: N rows drawn per label in proportion with the same shuffle;
  mteb embeds all of them and runs 10 bootstrapped MiniBatchKMeans clusterings (k = number of
  labels), reporting the mean V-measure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedkit.errors import DataFormatError, EmbedkitError

__all__ = ["sts_task", "retrieval_task", "classification_task", "clustering_task", "split_labelled", "unique_names",
           "resolve_mteb_tasks", "check_hub_available", "LOCAL_HINT"]

_GENERAL: dict[str, Any] = {
    "reference": None,
    "category": "t2t",
    "eval_langs": ["eng-Latn"],
    "modalities": ["text"],
    "domains": [],
    "task_subtypes": [],
    "license": "not specified",
    "annotations_creators": "derived",
    "dialect": [],
    "sample_creation": "found",
    "bibtex_citation": "",
    "date": None,
}


def _metadata(name: str, type_: str, main_score: str, source: str, eval_splits: Sequence[str] = ("test",)):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=name,
        description=f"embedkit local {type_} task read from {source}",
        dataset={"path": str(source), "revision": "local"},
        type=type_,
        main_score=main_score,
        eval_splits=list(eval_splits),
        **_GENERAL,
    )


def _stem(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in (".gz", ".tsv", ".txt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "data"


def _make(base, name: str, metadata, attrs: dict[str, Any]):
    """A subclass of ``base`` carrying ``metadata`` as a class attribute, and one instance of it.

    Class-level metadata keeps mteb's ``unload_data`` (which drops instance-level metadata) safe; the
    instance can be re-created with ``type(task)()`` for a fresh random state.
    """
    cls = type(f"{base.__name__}_{''.join(c if c.isalnum() else '_' for c in name)}", (base,), {"metadata": metadata, **attrs})
    return cls()


def _per_label_order(labels: Sequence[str], seed: int) -> dict[str, list[int]]:
    """Row indices of each label (labels in first-appearance order), shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    return {lab: [idx[j] for j in rng.permutation(len(idx))] for lab, idx in groups.items()}


def _proportional_subset(groups: dict[str, list[int]], n_total: int, max_rows: int | None) -> dict[str, list[int]]:
    if max_rows is None or max_rows >= n_total:
        return groups
    if max_rows < len(groups):
        raise EmbedkitError(f"max_rows={max_rows} is smaller than the number of labels ({len(groups)})")
    # largest-remainder apportionment, at least one row per label
    quotas = {lab: max(1, len(idx) * max_rows / n_total) for lab, idx in groups.items()}
    take = {lab: min(len(groups[lab]), int(q)) for lab, q in quotas.items()}
    rest = max_rows - sum(take.values())
    for lab in sorted(quotas, key=lambda lab: -(quotas[lab] - int(quotas[lab]))):
        if rest <= 0:
            break
        if take[lab] < len(groups[lab]):
            take[lab] += 1
            rest -= 1
    return {lab: idx[: take[lab]] for lab, idx in groups.items()}


def _check_max(value, what):
    if value is not None and int(value) < 1:
        raise EmbedkitError(f"{what} must be >= 1, got {value}")


# -- STS -------------------------------------------------------------------------------------------
def sts_task(path: str | os.PathLike, *, name: str | None = None, max_rows: int | None = None):
    """An ``AbsTaskSTS`` over an STS TSV (header, then ``score<TAB>sentence1<TAB>sentence2``).

    Raises:
        DataFormatError: a malformed file (file and line named).
    """
    from mteb.abstasks.sts import AbsTaskSTS

    from embedkit.data import read_sts_tsv

    _check_max(max_rows, "max_rows")
    ds = read_sts_tsv(path)
    n = len(ds) if max_rows is None else min(len(ds), int(max_rows))
    scores, s1, s2 = ds.scores[:n], ds.sentences1[:n], ds.sentences2[:n]
    if n < 2:
        raise DataFormatError(f"{Path(path).name}: an STS set needs at least 2 pairs, got {n}")
    name = name or f"LocalSTS-{_stem(path)}"

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset, DatasetDict

        if self.data_loaded:
            return
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentence1": s1, "sentence2": s2, "score": scores})})
        self.data_loaded = True

    lo, hi = float(min(scores)), float(max(scores))
    return _make(AbsTaskSTS, name, _metadata(name, "STS", "cosine_spearman", path),
                 {"load_data": load_data, "min_score": lo, "max_score": hi if hi > lo else lo + 1.0,
                  "n_rows": n})


# -- retrieval -------------------------------------------------------------------------------------
def retrieval_task(folder: str | os.PathLike, *, split: str = "test", name: str | None = None,
                   max_queries: int | None = None, max_docs: int | None = None):
    """An ``AbsTaskRetrieval`` over a BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/SPLIT.tsv).

    Documents are read as ``title + " " + text`` (mteb joins them that way, as embedkit's index does).
    Only queries with at least one judgement in ``qrels/SPLIT.tsv`` are kept.

    Raises:
        DataFormatError: a missing file, malformed row, or no judged queries.
    """
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    from embedkit.data import read_beir

    _check_max(max_queries, "max_queries")
    _check_max(max_docs, "max_docs")
    ds = read_beir(folder, split)
    qids = [q for q in ds.queries if ds.qrels.get(q)]
    if not qids:
        raise DataFormatError(f"{folder}: no judged queries in qrels/{split}.tsv")
    if max_queries is not None:
        qids = qids[: int(max_queries)]
    qrels = {q: dict(ds.qrels[q]) for q in qids}
    doc_ids = list(ds.corpus)
    if max_docs is not None:
        keep = list(dict.fromkeys(d for q in qids for d in qrels[q]))
        keep_set = set(keep)
        for d in doc_ids:
            if len(keep) >= int(max_docs):
                break
            if d not in keep_set:
                keep.append(d)
                keep_set.add(d)
        doc_ids = [d for d in doc_ids if d in keep_set]  # corpus file order
    corpus_rows = [{"id": d, "title": ds.corpus[d].get("title", ""), "text": ds.corpus[d]["text"]} for d in doc_ids]
    query_rows = [{"id": q, "text": ds.queries[q]} for q in qids]
    name = name or f"LocalRetrieval-{Path(folder).name}"

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset
        from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

        if self.data_loaded:
            return
        self.dataset = {"default": {split: RetrievalSplitData(
            corpus=Dataset.from_list(corpus_rows), queries=Dataset.from_list(query_rows),
            relevant_docs={q: dict(r) for q, r in qrels.items()}, top_ranked=None)}}
        self.data_loaded = True

    return _make(AbsTaskRetrieval, name, _metadata(name, "Retrieval", "ndcg_at_10", folder, (split,)),
                 {"load_data": load_data, "n_queries": len(qids), "n_docs": len(doc_ids)})


# -- classification / clustering -------------------------------------------------------------------
def split_labelled(labels: Sequence[str], *, test_fraction: float = 0.5, seed: int = 42,
                   max_rows: int | None = None) -> tuple[list[int], list[int]]:
    """Deterministic stratified (train, test) row indices; see the module docstring."""
    if not 0 < test_fraction < 1:
        raise EmbedkitError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    groups = _proportional_subset(_per_label_order(labels, seed), len(labels), max_rows)
    train, test = [], []
    for idx in groups.values():
        n_test = int(round(test_fraction * len(idx)))
        n_test = min(max(n_test, 1), len(idx) - 1) if len(idx) > 1 else 0
        test += idx[:n_test]
        train += idx[n_test:]
    return sorted(train), sorted(test)


def classification_task(path: str | os.PathLike, *, name: str | None = None, max_rows: int | None = None,
                        test_fraction: float = 0.5, seed: int = 42, samples_per_label: int | None = None,
                        n_experiments: int | None = None):
    """An ``AbsTaskClassification`` over a ``label<TAB>text`` TSV, split into train/test deterministically.

    Raises:
        DataFormatError: a malformed file, fewer than 2 labels, or a split without rows.
    """
    from mteb.abstasks.classification import AbsTaskClassification

    from embedkit.data import read_labelled_tsv

    _check_max(max_rows, "max_rows")
    labels, texts = read_labelled_tsv(path)
    if len(set(labels)) < 2:
        raise DataFormatError(f"{Path(path).name}: classification needs at least 2 labels, found {len(set(labels))}")
    train, test = split_labelled(labels, test_fraction=test_fraction, seed=seed, max_rows=max_rows)
    if not train or not test:
        raise DataFormatError(f"{Path(path).name}: too few rows for a train/test split ({len(labels)} rows)")
    names = sorted(set(labels))
    label_id = {lab: i for i, lab in enumerate(names)}
    name = name or f"LocalClassification-{_stem(path)}"

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset, DatasetDict

        if self.data_loaded:
            return
        self.dataset = DatasetDict({
            split: Dataset.from_dict({"text": [texts[i] for i in rows], "label": [label_id[labels[i]] for i in rows]})
            for split, rows in (("train", train), ("test", test))
        })
        self.data_loaded = True

    attrs: dict[str, Any] = {"load_data": load_data, "n_train": len(train), "n_test": len(test), "label_names": names}
    if samples_per_label is not None:
        attrs["samples_per_label"] = int(samples_per_label)
    if n_experiments is not None:
        attrs["n_experiments"] = int(n_experiments)
    return _make(AbsTaskClassification, name, _metadata(name, "Classification", "accuracy", path), attrs)


def clustering_task(path: str | os.PathLike, *, name: str | None = None, max_rows: int | None = None, seed: int = 42):
    """An ``AbsTaskClustering`` over a ``label<TAB>text`` TSV (every kept row is embedded and clustered).

    Raises:
        DataFormatError: a malformed file or fewer than 2 labels.
    """
    from mteb.abstasks.clustering import AbsTaskClustering

    from embedkit.data import read_labelled_tsv

    _check_max(max_rows, "max_rows")
    labels, texts = read_labelled_tsv(path)
    if len(set(labels)) < 2:
        raise DataFormatError(f"{Path(path).name}: clustering needs at least 2 labels, found {len(set(labels))}")
    groups = _proportional_subset(_per_label_order(labels, seed), len(labels), max_rows)
    rows = sorted(i for idx in groups.values() for i in idx)
    name = name or f"LocalClustering-{_stem(path)}"

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset, DatasetDict

        if self.data_loaded:
            return
        self.dataset = DatasetDict({"test": Dataset.from_dict({
            "sentences": [texts[i] for i in rows], "labels": [labels[i] for i in rows]})})
        self.data_loaded = True

    return _make(AbsTaskClustering, name, _metadata(name, "Clustering", "v_measure", path), {
        "load_data": load_data, "max_fraction_of_documents_to_embed": None, "max_document_to_embed": None,
        "max_documents_per_cluster": min(len(rows), 16_384), "n_rows": len(rows)})


def unique_names(tasks: list) -> list:
    """Raise if two tasks share a name (mteb would write both results to one file)."""
    seen: dict[str, int] = {}
    for t in tasks:
        n = t.metadata.name
        seen[n] = seen.get(n, 0) + 1
    dup = [n for n, c in seen.items() if c > 1]
    if dup:
        raise EmbedkitError(f"two tasks are named {dup[0]!r}; give the files different names (task names come from file names)")
    return tasks


# --- registered MTEB tasks (data from the Hugging Face Hub) ----------------------------------------

LOCAL_HINT = ("score your own files offline instead: embedkit eval local --sts FILE.tsv --beir BEIR_DIR "
              "--classification LABELLED.tsv --clustering LABELLED.tsv")


def resolve_mteb_tasks(names: Sequence[str]) -> list:
    """mteb task objects for registered task names (the registry ships with mteb: works offline).

    Raises:
        EmbedkitError: an unknown name (the message suggests close matches).
    """
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


def check_hub_available() -> None:
    """Registered MTEB tasks download their data from the Hugging Face Hub: refuse early when offline.

    Raises:
        EmbedkitError: an offline switch is set (see :func:`embedkit.models.loading.is_offline`).
    """
    from embedkit.models.loading import is_offline

    if is_offline():
        raise EmbedkitError(
            "registered MTEB tasks download their data from the Hugging Face Hub, which is offline here "
            f"(HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE or HF_DATASETS_OFFLINE is set); {LOCAL_HINT}")
