"""Label-free diagnostics of embedding sets: RankMe, PH separability, length collapse, CHES.

Example:
    >>> import numpy as np
    >>> from embedkit.analysis import rankme, separability
    >>> X = np.random.default_rng(0).standard_normal((500, 32))
    >>> round(rankme(X))
    32
"""

from __future__ import annotations

from embedkit.analysis._checks import AnalysisInputError
from embedkit.analysis.length_collapse import (
    LengthCollapseResult,
    length_collapse,
    mean_pairwise_cosine,
    search_temperature,
    token_lengths,
)
from embedkit.analysis.rankme import rankme, rankme_from_spectrum, singular_values
from embedkit.analysis.separability import (
    SeparabilityResult,
    fisher_ratio,
    h0_persistence,
    persistence_score,
    separability,
)

__all__ = [
    "AnalysisInputError",
    "rankme",
    "rankme_from_spectrum",
    "singular_values",
    "separability",
    "h0_persistence",
    "persistence_score",
    "fisher_ratio",
    "SeparabilityResult",
    "length_collapse",
    "mean_pairwise_cosine",
    "search_temperature",
    "token_lengths",
    "LengthCollapseResult",
]
