"""The report of ``embedkit diagnose``: plots of a :func:`~embedkit.analysis.diagnose.diagnose_embeddings`
summary and one self-contained HTML file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["write_diagnose_report"]

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
        slim = {k: v for k, v in summary.items() if k != "bias"}
        if b:
            slim["bias"] = {k: v for k, v in b.items() if not k.startswith("projections")}
        if path is not None:
            write_html_report(path, slim, imgs, captions={k: CAPTIONS[k] for k in imgs}, rows=rows,
                              title=title or f"embedkit diagnose: {summary.get('model', 'model')}")
            written["report"] = str(path)
        if plots_dir is not None:
            written.update({k: str(v) for k, v in imgs.items()})
    return written
