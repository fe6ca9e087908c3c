"""Contrastive losses for the sentence-transformers trainer, one per file.

* :class:`SimCSELoss` -- unsupervised SimCSE (dropout views, in-batch negatives).
* :class:`ESimCSELoss` -- ESimCSE (word repetition, momentum-encoder queue).

sentence-transformers' own ``MultipleNegativesRankingLoss`` on (s, s) pairs is the same SimCSE
objective and is available in recipes as ``loss: {name: mnrl}``.
"""

from __future__ import annotations

from embedkit.training.losses.esimcse import ESimCSELoss, MomentumUpdateCallback
from embedkit.training.losses.simcse import SimCSELoss, info_nce

__all__ = ["SimCSELoss", "ESimCSELoss", "MomentumUpdateCallback", "info_nce"]
