"""Scoring topic labels against true labels: the one function the CLI and the benchmark use."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedkit.errors import EmbedkitError

__all__ = ["score_labels"]


def score_labels(y_true: Sequence, y_pred: Sequence, labels: Sequence, *, scores: np.ndarray | None = None) -> dict:
    """Classification quality of predicted topic labels.

    Args:
        y_true: the true label of each document.
        y_pred: the predicted label of each document (same length).
        labels: every label, in the column order of ``scores``; macro averages run over all of
            them (a label without true documents counts with F1 0 when it is predicted, as in
            scikit-learn with ``zero_division=0``).
        scores: optional ``(n_documents, n_labels)`` scores (higher = more likely); adds the
            per-label ROC AUC of each column for retrieval quality.

    Returns:
        ``{"n", "accuracy", "macro_f1", "per_label": {label: {"precision", "recall", "f1",
        "support"}}}``, plus ``"roc_auc": {label: auc}`` (labels with both positive and negative
        documents) and ``"mean_roc_auc"`` when ``scores`` is given. Plain floats and ints (JSON-ready).

    Raises:
        EmbedkitError: different lengths, no documents, true labels that are not among ``labels``
            (e.g. label ids in one file and names in the other), or a ``scores`` shape that does
            not match.

    Example:
        >>> r = score_labels(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])
        >>> round(r["accuracy"], 3), round(r["macro_f1"], 3), r["per_label"]["b"]["support"]
        (0.667, 0.667, 2)
    """
    from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

    labels = [str(lab) for lab in labels]
    y_true = np.asarray([str(y) for y in y_true], dtype=object)
    y_pred = np.asarray([str(y) for y in y_pred], dtype=object)
    if len(y_true) != len(y_pred):
        raise EmbedkitError(f"{len(y_true)} true labels for {len(y_pred)} predictions; give one per document")
    if len(y_true) == 0:
        raise EmbedkitError("no documents to score")
    if len(set(labels)) != len(labels):
        raise EmbedkitError("labels contain duplicates")
    unknown = sorted(set(y_true.tolist()) - set(labels))
    if unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (" ..." if len(unknown) > 5 else "")
        raise EmbedkitError(f"true label(s) {shown} are not among the model's labels "
                            f"({', '.join(map(repr, labels))}); the documents' labels must use the same names")
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out: dict = {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_label": {lab: {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]),
                            "support": int(s[j])} for j, lab in enumerate(labels)},
    }
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(y_true), len(labels)):
            raise EmbedkitError(f"scores have shape {scores.shape}, expected ({len(y_true)}, {len(labels)})")
        auc = {}
        for j, lab in enumerate(labels):
            y = y_true == lab
            if 0 < y.sum() < len(y):
                auc[lab] = float(roc_auc_score(y, scores[:, j]))
        out["roc_auc"] = auc
        out["mean_roc_auc"] = float(np.mean(list(auc.values()))) if auc else float("nan")
    return out
