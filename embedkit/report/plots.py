"""Matplotlib PNG plots for the diagnostics report (headless: the Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_spectrum", "plot_length_collapse", "plot_barcode", "plot_bias_projections"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    import io

    from embedkit._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


#: singular values below this fraction of the largest are numerically zero (float32 round-off)
NUMERICAL_ZERO = 1e-6


def spectrum_shown(singular_values: Sequence[float]) -> tuple[np.ndarray, int]:
    """The normalised spectrum ``sigma_k / sigma_1`` without its numerically-zero tail, and how many
    components that tail has (with fewer texts than dimensions, the last ones are ~1e-16: drawn, they
    squash the informative part of a log axis into its top few percent)."""
    s = np.asarray(singular_values, dtype=np.float64)
    rel = s / s.max() if s.size and s.max() > 0 else np.ones_like(s)
    keep = rel > NUMERICAL_ZERO
    return rel[keep], int((~keep).sum())


def plot_spectrum(singular_values: Sequence[float], path: str | os.PathLike, *, rankme: float | None = None) -> Path:
    """Normalised singular-value spectrum (log scale), with the RankMe value in the title; components at
    numerical zero are left out (their count is given under the axis)."""
    plt = _plt()
    s = np.asarray(singular_values, dtype=np.float64)
    rel, dropped = spectrum_shown(s)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.semilogy(np.arange(1, len(rel) + 1), rel, lw=1.5)
    ax.set_xlim(1, max(len(rel), 2))
    ax.set_xlabel("component k" + (f"  ({dropped} more at numerical zero, < {NUMERICAL_ZERO:g} x the largest: "
                                   "not drawn)" if dropped else ""))
    ax.set_ylabel(r"$\sigma_k / \sigma_1$")
    ax.set_title("Singular-value spectrum" + (f"  (RankMe = {rankme:.1f} of {len(s)})" if rankme is not None else ""))
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def _padded_limits(values, min_span: float) -> tuple[float, float]:
    """Axis limits around ``values`` spanning at least ``min_span`` (so that noise is not drawn as a cliff)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    return mid - 0.6 * span, mid + 0.6 * span


def plot_length_collapse(buckets: Sequence[Mapping], path: str | os.PathLike, *, label: str | None = None,
                         extra: Mapping[str, Sequence[Mapping]] | None = None,
                         at_cap: tuple[int, int, int] | None = None, min_cosine_span: float = 0.1) -> Path:
    """Mean pairwise cosine (left axis) and RankMe (right axis) per length bucket.

    The cosine axis spans at least ``min_cosine_span`` (and RankMe at least a fifth of its largest
    value), so that a difference of 0.001 is not drawn as a cliff; the title gives the collapse measure
    (mean cosine of the longest bucket minus the shortest's). ``at_cap`` = ``(texts at the model's token
    cap, texts, cap)`` is printed under the plot: those texts were truncated, so their true length is unseen.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.9 if at_cap else 3.6))
    series = {label or "embeddings": buckets, **(extra or {})}
    ax2 = ax.twinx()
    cos_all, rank_all = [], []
    for name, bs in series.items():
        x = [b["mean_length"] for b in bs]
        cos_all += [b["mean_cosine"] for b in bs]
        rank_all += [b["rankme"] for b in bs]
        ax.plot(x, [b["mean_cosine"] for b in bs], "o-", label=f"{name}: mean cosine")
        ax2.plot(x, [b["rankme"] for b in bs], "s--", alpha=0.6, label=f"{name}: RankMe")
    ax.set_ylim(*_padded_limits(cos_all, min_cosine_span))
    ax2.set_ylim(*_padded_limits(rank_all, 0.2 * max(abs(v) for v in rank_all)))
    ax.set_xlabel("mean length of bucket (tokens)")
    ax.set_ylabel("mean pairwise cosine")
    ax2.set_ylabel("RankMe")
    first = next(iter(series.values()))
    collapse = first[-1]["mean_cosine"] - first[0]["mean_cosine"]
    ax.set_title(f"Length collapse: longest - shortest bucket cosine = {collapse:+.4f}", fontsize=10)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    if at_cap:
        n_cap, n, cap = at_cap
        fig.text(0.01, -0.02, f"{n_cap} of {n} texts reach the model's {cap}-token cap (truncated: their longest "
                 "bucket is the cap, not their length)", fontsize=7.5, ha="left", va="top")
    return _save(fig, path)


def plot_barcode(persistence: Sequence[float], path: str | os.PathLike, *, max_bars: int = 200) -> Path:
    """H0 persistence barcode (normalised by the maximum; the longest ``max_bars`` bars) and its histogram."""
    plt = _plt()
    p = np.sort(np.asarray(persistence, dtype=np.float64))[::-1]
    p = p / p.max() if p.max() > 0 else p
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(8, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    shown = p[:max_bars]
    ax.hlines(np.arange(len(shown)), 0, shown, lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("death time / max")
    ax.set_ylabel(f"H0 bar (longest {len(shown)} of {len(p)})")
    ax.set_title("Persistence barcode (H0)")
    ax2.hist(p, bins=40)
    ax2.set_xlabel("normalised persistence")
    ax2.set_title(f"mean = {p.mean():.3f} (lower = more separable)", fontsize=9)
    return _save(fig, path)


def plot_bias_projections(before: Mapping[str, float], path: str | os.PathLike, *, after: Mapping[str, float] | None = None,
                          n: int = 12, positive: str = "the first word of each definitional pair") -> Path:
    """cos(word, bias direction) for the most biased words on each side (and after debiasing if given).

    ``positive`` names the side the direction points to (e.g. ``"woman, girl, she"``): positive
    values lean that way. After hard-debias the neutral words project to (about) zero, so those values
    are drawn as markers on the zero line and their largest magnitude is given in the legend.
    """
    plt = _plt()
    items = sorted(before.items(), key=lambda kv: kv[1])
    pick = items[:n] + items[-n:] if len(items) > 2 * n else items
    words = [w for w, _ in pick]
    y = np.arange(len(words))
    fig, ax = plt.subplots(figsize=(6.4, max(3, 0.24 * len(words))))
    ax.barh(y, [before[w] for w in words], height=0.6, color="tab:blue", label="before")
    if after is not None:
        vals = [after.get(w, 0.0) for w in words]
        biggest = max(abs(v) for v in after.values()) if after else 0.0
        ax.plot(vals, y, "D", color="tab:orange", ms=5, mec="k", mew=0.5,
                label=f"after hard-debias (max |cos| = {biggest:.1e})")
    ax.set_yticks(y, words, fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"cos(word, bias direction);  + leans to {positive}", fontsize=8)
    ax.set_title("Bias projections of professions")
    ax.legend(fontsize=7)
    return _save(fig, path)
