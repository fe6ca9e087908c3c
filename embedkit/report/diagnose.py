"""The report of ``embedkit diagnose``: plots of a :func:`~embedkit.analysis.diagnose.diagnose_embeddings`
summary and one self-contained HTML file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["reading_notes", "write_diagnose_report"]

#: reference values (docs/diagnostics.md): all-MiniLM-L6-v2 on 400 BBC News articles of 5 topics
REFERENCE = "all-MiniLM-L6-v2 on 400 BBC News articles (5 topics)"
#: length collapse above this is called a collapse
COLLAPSE_WARN = 0.05

CAPTIONS = {
    "spectrum": "Singular values of the embedding matrix; RankMe = exp(entropy of the normalised spectrum).",
    "barcode": "H0 persistence (minimum-spanning-tree edge lengths of L2-normalised embeddings).",
    "length": "Mean pairwise cosine and RankMe per length bucket; rising cosine with length = collapse.",
    "bias": "Projection of profession words on the gender direction (oriented so that + leans to the first word "
            "of the definitional pairs), before and after hard-debias (which neutralises them to about 0).",
}


def write_diagnose_report(path: str | os.PathLike | None, summary: Mapping[str, Any], arrays: Mapping[str, Any], *,
                          plots_dir: str | os.PathLike | None = None, title: str | None = None) -> dict[str, str]:
    """Plot a diagnose summary and write the HTML report (and/or keep the PNG plots).

    Args:
        path: the HTML file to write (atomically); ``None`` writes only the plots.
        summary: what :func:`~embedkit.analysis.diagnose.diagnose_embeddings` returned (without
            ``_arrays``), optionally with ``bias`` (:func:`~embedkit.analysis.diagnose.bias_report`)
            and ``model``.
        arrays: the ``_arrays`` of that result (``singular_values``, ``persistence``).
        plots_dir: keep the PNG plots in this folder (it must exist); ``None`` uses a temporary one.
        title: the report's title (default ``embedkit diagnose: MODEL``).

    Returns:
        ``{"report": path}`` (when written) and one entry per plot kept in ``plots_dir``.
    """
    from embedkit.report.html import write_html_report
    from embedkit.report.plots import plot_barcode, plot_bias_projections, plot_length_collapse, plot_spectrum

    written: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(plots_dir) if plots_dir is not None else Path(tmp)
        imgs = {
            "spectrum": plot_spectrum(arrays["singular_values"], d / "spectrum.png", rankme=summary["rankme"]),
            "barcode": plot_barcode(arrays["persistence"], d / "barcode.png"),
        }
        lc = summary.get("length_collapse", {}) or {}
        if "buckets" in lc:
            cap = (lc["texts_at_token_cap"], summary["n_texts"], lc["token_cap"]) if lc.get("token_cap") else None
            imgs["length"] = plot_length_collapse(lc["buckets"], d / "length.png", at_cap=cap)
        b = summary.get("bias", {}) or {}
        if "projections" in b:
            imgs["bias"] = plot_bias_projections(b["projections"], d / "bias.png", after=b["projections_after"],
                                                 positive=b.get("positive_side") or "the first word of each definitional pair")
        rows = {"texts": summary["n_texts"], "dimension": summary["dim"], "RankMe": summary["rankme"],
                "PH separability": summary["separability"]["separability"]}
        if "fisher_ratio" in summary:
            rows["Fisher ratio (labels)"] = summary["fisher_ratio"]
        if "collapse" in lc:
            rows["length collapse"] = lc["collapse"]
        if lc.get("token_cap"):
            rows[f"texts at the {lc['token_cap']}-token cap"] = f"{lc['texts_at_token_cap']} of {summary['n_texts']}"
        if "direct_bias" in b:
            rows["direct gender bias (professions)"] = b["direct_bias"]
        notes = reading_notes(summary, rows)
        slim = {k: v for k, v in summary.items() if k != "bias"}
        if b:
            slim["bias"] = {k: v for k, v in b.items() if not k.startswith("projections")}
        if path is not None:
            write_html_report(path, slim, imgs, captions={k: CAPTIONS[k] for k in imgs}, rows=rows, notes=notes,
                              title=title or f"embedkit diagnose: {summary.get('model', 'model')}")
            written["report"] = str(path)
        if plots_dir is not None:
            written.update({k: str(v) for k, v in imgs.items()})
    return written


def reading_notes(summary: Mapping[str, Any], rows: Mapping[str, Any]) -> dict[str, str]:
    """How to read each measure of a diagnose report: its range, which way is better, a reference value
    measured on real data, and a verdict where a threshold means something (keys as in ``rows``)."""
    n, dim = int(summary["n_texts"]), int(summary["dim"])
    out = {"texts": "texts encoded; the measures compare best between models or checkpoints on the same texts",
           "dimension": "embedding dimension"}
    r = float(summary["rankme"])
    frac = r / max(1, min(n, dim))
    verdict = ("low: the embeddings use few directions (dimensional collapse)" if frac < 0.1 else
               "healthy range for a trained encoder" if frac >= 0.3 else "moderate")
    out["RankMe"] = (f"effective number of dimensions used, 1..{min(n, dim)}; here {frac:.0%} of that: {verdict}. "
                     f"Higher = a richer space ({REFERENCE}: 230 of 384). A drop between checkpoints of one model on "
                     "the same texts is the warning sign.")
    out["PH separability"] = ("0..1, higher = the texts form more separated groups. Not an absolute scale: in "
                              f"hundreds of dimensions it stays low ({REFERENCE}: 0.24, while their 10-NN topic "
                              "accuracy is 0.96); compare models or checkpoints on the same texts.")
    if "Fisher ratio (labels)" in rows:
        out["Fisher ratio (labels)"] = ("between-label over within-label scatter of your labels; higher = labels "
                                        f"better separated ({REFERENCE}: 0.19). Compare on the same texts and labels.")
    lc = summary.get("length_collapse", {}) or {}
    if "collapse" in lc:
        c = float(lc["collapse"])
        verdict = (f"above {COLLAPSE_WARN:g}: long texts crowd together; try `embedkit diagnose tempscale`"
                   if c > COLLAPSE_WARN else "no length collapse")
        out["length collapse"] = (f"mean cosine of the longest length bucket minus the shortest's; about 0 or "
                                  f"negative is healthy (BBC: -0.001, SciFact: -0.013): {verdict}.")
    if lc.get("token_cap"):
        out[f"texts at the {lc['token_cap']}-token cap"] = ("truncated to the model's window: the length measure "
                                                            "cannot see their true length")
    if "direct gender bias (professions)" in rows:
        out["direct gender bias (professions)"] = ("mean |cos| of profession words with the gender direction; 0 = "
                                                   "none (all-MiniLM-L6-v2 words: 0.050; a small word2vec: 0.23-0.28); "
                                                   "`embedkit debias` removes it.")
    return out
