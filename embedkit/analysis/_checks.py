"""Input validation shared by the analysis functions (one clear error per bad input)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedkit.errors import AnalysisInputError


def check_embeddings(X, *, name: str = "embeddings", min_rows: int = 1, dtype=np.float64) -> np.ndarray:
    """Return ``X`` as a finite 2-D array, or raise :class:`AnalysisInputError` naming the problem."""
    try:
        A = np.asarray(X)
        if dtype is not None or not np.issubdtype(A.dtype, np.floating):
            A = A.astype(dtype or np.float64, copy=False)
    except (TypeError, ValueError) as e:
        raise AnalysisInputError(f"{name}: not a numeric matrix ({e})") from e
    if A.ndim != 2:
        raise AnalysisInputError(f"{name}: expected a 2-D matrix (n_texts x dim), got shape {A.shape}")
    if A.shape[1] == 0:
        raise AnalysisInputError(f"{name}: has 0 columns")
    if A.shape[0] < min_rows:
        raise AnalysisInputError(
            f"{name}: {A.shape[0]} row(s) given, at least {min_rows} needed for this measure"
        )
    if not np.isfinite(A).all():
        bad = np.argwhere(~np.isfinite(A))[0]
        raise AnalysisInputError(
            f"{name}: contains NaN or infinite values (first at row {bad[0]}, column {bad[1]})"
        )
    return A


def check_labels(labels: Sequence, n_rows: int, *, name: str = "labels", min_classes: int = 2) -> np.ndarray:
    """Return labels as an integer-coded array of length ``n_rows``."""
    labels = list(labels)
    if len(labels) != n_rows:
        raise AnalysisInputError(f"{name}: {len(labels)} labels given for {n_rows} embeddings; counts must match")
    _, codes = np.unique(np.asarray([str(x) for x in labels]), return_inverse=True)
    if codes.max(initial=-1) + 1 < min_classes:
        raise AnalysisInputError(f"{name}: only {codes.max(initial=-1) + 1} distinct label(s); need at least {min_classes}")
    return codes


def l2_normalize(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if (norms == 0).any():
        raise AnalysisInputError(f"embeddings: row {int(np.argmax(norms[:, 0] == 0))} is all zeros and cannot be L2-normalised")
    return X / norms
