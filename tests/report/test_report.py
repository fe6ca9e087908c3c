from __future__ import annotations

import numpy as np

from embedkit.report import plot_barcode, plot_bias_projections, plot_length_collapse, plot_spectrum, write_html_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_and_html(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {
        "spectrum": plot_spectrum(np.sort(rng.random(32))[::-1], tmp_path / "s.png", rankme=20.5),
        "barcode": plot_barcode(rng.random(99), tmp_path / "b.png"),
        "length": plot_length_collapse([{"mean_length": 10, "mean_cosine": 0.2, "rankme": 30},
                                        {"mean_length": 200, "mean_cosine": 0.4, "rankme": 12}], tmp_path / "l.png",
                                       extra={"tau=0.9": [{"mean_length": 10, "mean_cosine": 0.1, "rankme": 31},
                                                          {"mean_length": 200, "mean_cosine": 0.2, "rankme": 20}]}),
        "bias": plot_bias_projections({f"w{i}": float(v) for i, v in enumerate(rng.standard_normal(40))}, tmp_path / "x.png",
                                      after={"w0": 0.0}),
    }
    for p in imgs.values():
        assert p.read_bytes().startswith(PNG)
    out = write_html_report(tmp_path / "r.html", {"rankme": 20.5, "note": "<b>escaped</b>"}, imgs, rows={"RankMe": 20.5})
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 4
    assert "&lt;b&gt;escaped&lt;/b&gt;" in html and "<b>escaped</b>" not in html


def test_diagnose_report_writer(tmp_path):
    from embedkit.analysis.diagnose import diagnose_embeddings
    from embedkit.report import is_embedkit_report, write_diagnose_report

    rng = np.random.default_rng(0)
    E = rng.standard_normal((40, 8))
    summary = diagnose_embeddings(E, lengths=rng.integers(1, 50, 40), labels=["a", "b"] * 20)
    arrays = summary.pop("_arrays")
    plots = tmp_path / "plots"
    plots.mkdir()
    written = write_diagnose_report(tmp_path / "r.html", {**summary, "model": "m"}, arrays, plots_dir=plots)
    assert written["report"] == str(tmp_path / "r.html")
    assert sorted(p.name for p in plots.iterdir()) == ["barcode.png", "length.png", "spectrum.png"]
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Fisher ratio" in html and "embedkit diagnose: m" in html
    assert is_embedkit_report(tmp_path / "r.html")
    (tmp_path / "mine.html").write_text("<html>my own</html>")
    assert not is_embedkit_report(tmp_path / "mine.html") and not is_embedkit_report(tmp_path / "none.html")
    # plots only, no HTML
    assert set(write_diagnose_report(None, summary, arrays, plots_dir=plots)) == {"spectrum", "barcode", "length"}
