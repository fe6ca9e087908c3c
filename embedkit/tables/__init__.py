"""Compressed embedding tables for categorical features (recommendation / ranking models).

* :class:`FullTables` — one ``nn.Embedding`` per feature with a vocabulary (the 100% reference);
* :class:`HashingTrick` — per-feature hashed tables (Weinberger et al., ICML 2009);
* :class:`QRTrick` — quotient-remainder compositional tables (Shi et al., KDD 2020);
* :class:`UnifiedEmbedding` — one shared multiplexed table with multi-probe chunks
  (Coleman et al., NeurIPS 2023);
* :func:`plan_budget` / :func:`tables_for_budget` — size any of them to a fraction of the full
  tables' parameters.

All take ``{feature: ids}`` (LongTensor, padded 2-D LongTensor, :class:`Bag`, or strings) and
return ``{feature: embeddings}``; all save/load as safetensors + JSON (:func:`load_tables`).
"""

from __future__ import annotations

from ._hash import bucket, hash64, hash_strings
from .base import Bag, CategoricalTables, load_tables
from .budget import METHODS, TableBudget, full_parameters, plan_budget, tables_for_budget
from .full import FullTables
from .hashing import HashingTrick
from .qr import QRTrick
from .unified import UnifiedEmbedding

__all__ = [
    "Bag",
    "CategoricalTables",
    "FullTables",
    "HashingTrick",
    "METHODS",
    "QRTrick",
    "TableBudget",
    "UnifiedEmbedding",
    "bucket",
    "full_parameters",
    "hash64",
    "hash_strings",
    "load_tables",
    "plan_budget",
    "tables_for_budget",
]
