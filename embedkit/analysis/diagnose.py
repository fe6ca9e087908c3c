"""One call that runs every label-free diagnostic on a model + texts (used by ``embedkit diagnose``).

Python entry points: :func:`diagnose_texts` (model + texts, what ``embedkit diagnose`` runs),
:func:`diagnose_embeddings` (a precomputed matrix) and :func:`bias_report`; the HTML report is
written by :func:`embedkit.report.write_diagnose_report`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from embedkit.analysis._checks import check_labels
from embedkit.analysis.length_collapse import length_collapse
from embedkit.analysis.rankme import rankme
from embedkit.analysis.separability import fisher_ratio, separability
from embedkit.errors import AnalysisInputError, EmbedkitError

__all__ = ["diagnose_texts", "diagnose_embeddings", "bias_report"]

logger = logging.getLogger(__name__)


def bias_report(model, lists_dir: str | os.PathLike | None = None) -> dict:
    """Gender direction of the model's word vectors (each word encoded alone) and the professions' projections.

    Returns a dict with ``direct_bias`` (over gender-neutral professions), ``direct_bias_after``
    (after hard-debias of these word vectors), ``projections`` and ``projections_after``.
    """
    from embedkit.debias import HardDebias, bias_projections, direct_bias, load_word_lists
    from embedkit.debias.word_vectors import encoder_word_vectors

    lists = load_word_lists(lists_dir)
    specific = set(lists.gender_specific)
    prof = [w for w in lists.professions if w not in specific and "_" not in w]
    words = [w for p in lists.definitional + lists.equalize for w in p] + prof
    kv = encoder_word_vectors(model, [w for w in words if "_" not in w], show_progress=False)
    hd = HardDebias(lists.definitional, lists.equalize, lists.gender_specific).fit(kv)
    out = hd.transform(kv)
    g = hd.bias_direction_
    return {
        "definitional_pairs_used": len(hd.definitional_pairs_used_),
        "explained_variance_ratio_first": float(hd.explained_variance_ratio_[0]),
        "n_professions": len(prof),
        "direct_bias": direct_bias(kv, g, prof),
        "direct_bias_after": direct_bias(out, g, prof),
        "projections": bias_projections(kv, g, prof),
        "projections_after": bias_projections(out, g, prof),
        "positive_side": ", ".join(a for a, _ in hd.definitional_pairs_used_[:3]),
    }


def diagnose_embeddings(embeddings: np.ndarray, *, lengths: Sequence[int] | None = None, labels: Sequence | None = None,
                        max_points: int = 3000) -> dict:
    """RankMe + spectrum, PH separability (+ Fisher ratio with labels), length collapse (with lengths).

    Returns a JSON-ready dict; arrays needed for plots are under the ``_arrays`` key.
    """
    E = np.asarray(embeddings)
    if labels is not None:
        check_labels(labels, len(E))
    r, s = rankme(E, return_spectrum=True)
    sep = separability(E, max_points=max_points)
    out = {"n_texts": int(len(E)), "dim": int(E.shape[1]), "rankme": r, "rankme_fraction_of_dim": r / min(E.shape),
           "separability": sep.to_dict()}
    arrays = {"singular_values": s, "persistence": sep.persistence}
    if labels is not None:
        out["fisher_ratio"] = fisher_ratio(E, labels)
    if lengths is not None:
        try:
            lc = length_collapse(E, lengths)
            out["length_collapse"] = lc.to_dict()
        except AnalysisInputError as e:
            out["length_collapse"] = {"skipped": str(e)}
    out["_arrays"] = arrays
    return out


def diagnose_texts(model, texts: Sequence[str], *, labels: Sequence | None = None, bias: bool = True,
                   bias_lists: str | os.PathLike | None = None, show_progress: bool = True,
                   max_points: int = 3000) -> dict:
    """Encode ``texts`` with ``model`` (through the embedding cache) and run every diagnostic.

    Args:
        model: a SentenceTransformer (e.g. :func:`embedkit.load_encoder`).
        texts: at least 3 texts (varied lengths make the length-collapse measure meaningful).
        labels: optional, one per text: adds the Fisher ratio.
        bias: add :func:`bias_report` (skipped, with the reason under ``bias.skipped``, when the
            word lists are not available).
        bias_lists: folder of the debias word lists (default ``<data>/debias``).

    Returns:
        The :func:`diagnose_embeddings` dict (``_arrays`` included, for
        :func:`embedkit.report.write_diagnose_report`), plus ``bias`` when asked for.

    Example:
        .. code-block:: python

            from embedkit import load_encoder
            from embedkit.analysis.diagnose import diagnose_texts

            summary = diagnose_texts(load_encoder(), texts)
            print(summary["rankme"], summary["length_collapse"].get("collapse"))
    """
    from embedkit.analysis.length_collapse import token_lengths
    from embedkit.cache import encode_cached

    texts = list(texts)
    if len(texts) < 3:
        raise AnalysisInputError(f"{len(texts)} text(s); at least 3 are needed")
    if labels is not None:
        check_labels(labels, len(texts))
    logger.info("encoding %d texts ...", len(texts))
    E = encode_cached(model, texts, desc="encoding", show_progress=show_progress)
    lengths = token_lengths(model, texts)
    summary = diagnose_embeddings(E, lengths=lengths, labels=labels, max_points=max_points)
    cap = getattr(model, "max_seq_length", None)
    if cap:  # texts cut at the model's window: their length beyond it is invisible to the model
        summary.setdefault("length_collapse", {})
        summary["length_collapse"]["token_cap"] = int(cap)
        summary["length_collapse"]["texts_at_token_cap"] = int((np.asarray(lengths) >= cap).sum())
    if bias:
        try:
            summary["bias"] = bias_report(model, bias_lists)
        except EmbedkitError as e:
            summary["bias"] = {"skipped": str(e)}
    return summary
