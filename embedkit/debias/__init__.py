"""Bias diagnosis and repair: hard-debias of word vectors, bias metrics, sentence-level projection.

Example:
    >>> from embedkit.debias import HardDebias, load_word_lists   # doctest: +SKIP
    >>> lists = load_word_lists()                                 # doctest: +SKIP
    >>> hd = HardDebias(lists.definitional, lists.equalize, lists.gender_specific).fit(kv)  # doctest: +SKIP
    >>> debiased = hd.transform(kv)                               # doctest: +SKIP
"""

from __future__ import annotations

from embedkit.debias.hard_debias import DebiasInputError, HardDebias, equalize_candidates
from embedkit.debias.metrics import analogy_accuracy, bias_projections, direct_bias, word_similarity
from embedkit.debias.word_lists import DebiasWordLists, load_word_lists


def __getattr__(name):  # the sentence module imports torch + sentence-transformers: load it only when asked
    if name in ("BiasProjection", "debias_sentence_encoder", "fit_sentence_bias_subspace", "templated_pairs"):
        from embedkit.debias import sentence

        return getattr(sentence, name)
    raise AttributeError(f"module 'embedkit.debias' has no attribute {name!r}")

__all__ = [
    "HardDebias",
    "DebiasInputError",
    "equalize_candidates",
    "direct_bias",
    "bias_projections",
    "word_similarity",
    "analogy_accuracy",
    "load_word_lists",
    "DebiasWordLists",
    "BiasProjection",
    "debias_sentence_encoder",
    "fit_sentence_bias_subspace",
    "templated_pairs",
]
