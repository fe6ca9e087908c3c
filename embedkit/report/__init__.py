"""Plots (matplotlib PNG) and the self-contained HTML report of ``embedkit diagnose``."""

from __future__ import annotations

from embedkit.report.diagnose import write_diagnose_report
from embedkit.report.html import is_embedkit_report, write_html_report
from embedkit.report.plots import plot_barcode, plot_bias_projections, plot_length_collapse, plot_spectrum

__all__ = ["write_html_report", "write_diagnose_report", "is_embedkit_report", "plot_spectrum",
           "plot_length_collapse", "plot_barcode", "plot_bias_projections"]
