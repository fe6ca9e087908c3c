"""Length collapse: do embeddings of longer texts crowd together? (Zhou et al., ACL 2025, arXiv 2410.24200)

Texts are split into length buckets (token counts, as the model sees them: capped at its max
sequence length); per bucket we report the mean pairwise cosine similarity (higher = more crowded)
and RankMe (on equally many rows per bucket, since RankMe grows with the row count). The **collapse measure** is mean cosine of the longest bucket minus that of the
shortest (positive = long texts are more alike than short ones).

:func:`search_temperature` picks a TempScale temperature on unlabelled texts. The paper tunes
tau per model on labelled tasks; here, without labels, the objective is our choice: the lowest
mean pairwise cosine among the long texts, among taus whose embeddings stay close to the
untouched model's (mean cosine between a text's embedding at tau and at 1 >= ``min_agreement``),
so a tau that scatters embeddings by destroying them is not picked.

A temperature is recommended only when the repair is real: the untouched model must show collapse
(collapse measure > ``min_collapse``), the best tau must lower the long texts' mean cosine by at least
``min_gain``, and that gain must hold in at least 95% of paired bootstrap resamples of the long texts
(a one-sided test at 5%). Otherwise the result says "nothing to repair" with tau = 1, and the CLI
writes no model — a 0.001 change on 80 texts is noise, not a repair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from embedkit.analysis._checks import AnalysisInputError, check_embeddings, l2_normalize
from embedkit.analysis.rankme import rankme

__all__ = ["mean_pairwise_cosine", "length_collapse", "token_lengths", "search_temperature", "LengthCollapseResult"]


def mean_pairwise_cosine(X) -> float:
    """Mean cosine over all pairs i != j, in O(n d): (||sum x_i||^2 - n) / (n (n - 1)) for unit rows."""
    X = l2_normalize(check_embeddings(X, min_rows=2))
    n = len(X)
    s = X.sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


@dataclass
class LengthCollapseResult:
    """Per-bucket statistics and the collapse measure."""

    buckets: list[dict] = field(default_factory=list)
    collapse: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def length_collapse(embeddings, lengths: Sequence[int], *, n_buckets: int = 4, edges: Sequence[float] | None = None,
                    min_bucket: int = 5) -> LengthCollapseResult:
    """Mean pairwise cosine and RankMe per length bucket (quantile buckets unless ``edges`` given).

    Args:
        embeddings: N x D.
        lengths: N token counts (e.g. :func:`token_lengths`).
        n_buckets: quantile buckets (fewer when many texts share a length, e.g. the length cap).
        edges: explicit inner bucket edges instead of quantiles.
        min_bucket: buckets with fewer texts are dropped.

    Raises:
        AnalysisInputError: lengths/embeddings count mismatch, NaN, fewer than 2 usable buckets.
    """
    X = check_embeddings(embeddings, min_rows=2 * min_bucket)
    L = np.asarray(lengths, dtype=np.float64)
    if L.shape != (len(X),):
        raise AnalysisInputError(f"lengths: {L.size} given for {len(X)} embeddings; counts must match")
    if edges is None:
        inner = np.unique(np.quantile(L, np.linspace(0, 1, n_buckets + 1)[1:-1]))
    else:
        inner = np.unique(np.asarray(edges, dtype=np.float64))
    # bucket b holds inner[b-1] <= L < inner[b]; ties stay together, so texts capped at the model's
    # maximum length form their own last bucket instead of swallowing the quantile edges
    ids = np.searchsorted(inner, L, side="right")
    keep = [b for b in np.unique(ids) if (ids == b).sum() >= min_bucket]
    # RankMe grows with the number of rows, so every bucket's RankMe uses the same number of rows
    # (a seeded subsample of the size of the smallest bucket): comparable across buckets.
    n_rank = min(((ids == b).sum() for b in keep), default=0)
    rng = np.random.default_rng(0)
    buckets = []
    for b in keep:
        rows = np.flatnonzero(ids == b)
        sub = rows if len(rows) == n_rank else np.sort(rng.choice(rows, n_rank, replace=False))
        buckets.append({"lo": float(L[rows].min()), "hi": float(L[rows].max()), "n": int(len(rows)),
                        "mean_length": float(L[rows].mean()), "mean_cosine": mean_pairwise_cosine(X[rows]),
                        "rankme": rankme(X[sub]), "rankme_rows": int(n_rank)})
    if len(buckets) < 2:
        raise AnalysisInputError(
            f"lengths: only {len(buckets)} length bucket(s) with >= {min_bucket} texts; need texts of varied length"
        )
    return LengthCollapseResult(buckets=buckets, collapse=buckets[-1]["mean_cosine"] - buckets[0]["mean_cosine"])


def token_lengths(model, texts: Sequence[str]) -> np.ndarray:
    """Token counts as the model sees them (special tokens included, capped at ``max_seq_length``)."""
    tok = model.tokenizer
    cap = getattr(model, "max_seq_length", None) or 10**9
    ids = tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    return np.minimum(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts)), cap)


def search_temperature(model, texts: Sequence[str], *, taus: Sequence[float] = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7),
                       long_quantile: float = 0.5, min_agreement: float = 0.9, encode=None,
                       show_progress: bool = False, min_gain: float = 0.01, min_collapse: float = 0.0,
                       n_resamples: int = 200, confidence: float = 0.95, seed: int = 0) -> dict:
    """Search a TempScale temperature on unlabelled texts (see module docstring for the objective).

    The model is modified in place while searching and restored bit-exactly at the end; taus are
    relative to the model's current temperature.

    Args:
        model: SentenceTransformer (its attention is scaled, then restored).
        texts: unlabelled texts of varied length.
        taus: candidates (1.0 is always added as the reference).
        long_quantile: texts at or above this length quantile form the "long" set.
        min_agreement: minimum mean cosine between embeddings at tau and at 1.
        encode: ``f(model, texts) -> array``; default :func:`embedkit.cache.encode_cached`.
        min_gain: smallest drop of the long texts' mean cosine (vs tau = 1) that counts as a repair.
        min_collapse: the untouched model's collapse measure must exceed this for any repair.
        n_resamples: paired bootstrap resamples of the long texts for the significance check.
        confidence: share of resamples in which the gain must be positive.
        seed: seed of the resampling.

    Returns:
        dict with ``best_tau`` (1.0 when nothing is worth repairing), ``repair`` (bool), ``reason``,
        ``candidate_tau`` (the best admissible tau before the checks), ``gain``, ``gain_support`` (share
        of resamples with a positive gain) and per-tau ``long_mean_cosine``, ``collapse``, ``rankme``,
        ``agreement``.
    """
    from embedkit.models.tempscale import apply_tempscale, preserved_attention

    if encode is None:
        from embedkit.cache import encode_cached

        def encode(m, t):
            return encode_cached(m, t, show_progress=show_progress, desc="tau search")

    texts = list(texts)
    lengths = token_lengths(model, texts)
    long_mask = lengths >= np.quantile(lengths, long_quantile)
    ref = None
    rows = []
    embeddings = {}
    with preserved_attention(model) as keep:
        for tau in [1.0] + [float(t) for t in taus if float(t) != 1.0]:
            keep.reset()  # every tau is applied to the original weights (bit-exact, so cached encodings match)
            apply_tempscale(model, tau)
            E = l2_normalize(check_embeddings(encode(model, texts), name=f"embeddings at tau={tau}"))
            if ref is None:
                ref = E
            embeddings[tau] = E[long_mask]
            lc = length_collapse(E, lengths, n_buckets=2)
            rows.append({"tau": tau, "long_mean_cosine": mean_pairwise_cosine(E[long_mask]), "collapse": lc.collapse,
                         "rankme": rankme(E), "agreement": float(np.mean(np.sum(E * ref, axis=1)))})
    ok = [r for r in rows if r["agreement"] >= min_agreement]
    best = min(ok, key=lambda r: r["long_mean_cosine"])
    base = rows[0]
    gain = base["long_mean_cosine"] - best["long_mean_cosine"]
    support = _gain_support(embeddings[1.0], embeddings[best["tau"]], n_resamples, seed) if best["tau"] != 1.0 else 0.0
    if best["tau"] == 1.0:
        reason = "nothing to repair: no temperature lowers the long texts' mean cosine"
    elif base["collapse"] <= min_collapse:
        reason = (f"nothing to repair: the model shows no length collapse (collapse {base['collapse']:+.4f} "
                  f"<= {min_collapse:g})")
    elif gain < min_gain:
        reason = f"nothing to repair: the best gain {gain:.4f} is below min_gain {min_gain:g}"
    elif support < confidence:
        reason = (f"nothing to repair: the gain {gain:.4f} holds in only {support:.0%} of {n_resamples} resamples "
                  f"(needs {confidence:.0%})")
    else:
        reason = f"tau {best['tau']:g} lowers the long texts' mean cosine by {gain:.4f} ({support:.0%} of resamples)"
    repair = reason.startswith("tau")
    return {"best_tau": best["tau"] if repair else 1.0, "repair": repair, "reason": reason,
            "candidate_tau": best["tau"], "gain": float(gain), "gain_support": float(support),
            "objective": "min long_mean_cosine s.t. agreement >= min_agreement",
            "min_agreement": min_agreement, "min_gain": min_gain, "min_collapse": min_collapse,
            "n_texts": len(texts), "n_long": int(long_mask.sum()), "results": rows}


def _gain_support(ref_long: np.ndarray, cand_long: np.ndarray, n_resamples: int, seed: int) -> float:
    """Share of paired bootstrap resamples (same texts for both) in which the candidate's mean cosine is lower."""
    n = len(ref_long)
    if n < 3 or n_resamples < 1:
        return 0.0
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(int(n_resamples)):
        idx = rng.integers(0, n, size=n)
        idx = np.unique(idx)  # duplicates would pair a text with itself (cosine 1) and bias both sides
        if len(idx) < 2:
            continue
        wins += mean_pairwise_cosine(cand_long[idx]) < mean_pairwise_cosine(ref_long[idx])
    return wins / n_resamples
