from __future__ import annotations

import numpy as np
import pytest

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


def _capture(monkeypatch):
    import embedkit.report.plots as P

    figs = []

    def keep(fig, path):
        figs.append(fig)
        return path

    monkeypatch.setattr(P, "_save", keep)
    return figs


def test_length_plot_draws_a_tiny_difference_small_and_says_how_many_texts_hit_the_cap(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    buckets = [{"mean_length": 40, "mean_cosine": 0.1215, "rankme": 30.0},
               {"mean_length": 256, "mean_cosine": 0.1204, "rankme": 29.6}]
    plot_length_collapse(buckets, tmp_path / "l.png", at_cap=(363, 400, 256))
    fig = figs[0]
    lo, hi = fig.axes[0].get_ylim()
    assert hi - lo >= 0.1  # a 0.0011 change is not a cliff spanning the whole axis
    assert "-0.0011" in fig.axes[0].get_title()
    assert any("363 of 400 texts reach the model's 256-token cap" in t.get_text() for t in fig.texts)
    # a real collapse still fills the axis
    plot_length_collapse([{"mean_length": 10, "mean_cosine": 0.1, "rankme": 30},
                          {"mean_length": 300, "mean_cosine": 0.7, "rankme": 10}], tmp_path / "m.png")
    lo, hi = figs[1].axes[0].get_ylim()
    assert lo <= 0.1 and hi >= 0.7 and hi - lo < 0.8


def test_bias_plot_shows_the_after_values_and_the_sign_convention(tmp_path, monkeypatch):
    figs = _capture(monkeypatch)
    before = {"nurse": 0.3, "engineer": -0.25, "teacher": 0.1}
    after = {"nurse": 2e-8, "engineer": -1e-8, "teacher": 0.0}
    plot_bias_projections(before, tmp_path / "b.png", after=after, positive="woman, girl, she")
    ax = figs[0].axes[0]
    marks = [ln for ln in ax.get_lines() if "after hard-debias" in ln.get_label()]
    assert marks and len(marks[0].get_xdata()) == 3 and marks[0].get_marker() == "D"
    assert "2.0e-08" in marks[0].get_label()
    assert "+ leans to woman, girl, she" in ax.get_xlabel()


def test_diagnose_texts_counts_the_texts_at_the_token_cap(tiny_model, isolated_cache):
    from embedkit.analysis.diagnose import diagnose_texts

    old = tiny_model.max_seq_length
    tiny_model.max_seq_length = 8
    try:
        texts = [" ".join(["word"] * n) for n in (1, 2, 3, 4, 20, 30, 40)] * 3
        out = diagnose_texts(tiny_model, texts, bias=False, show_progress=False)
    finally:
        tiny_model.max_seq_length = old
    assert out["length_collapse"]["token_cap"] == 8
    assert out["length_collapse"]["texts_at_token_cap"] == 9  # 20, 30 and 40 words, three times each


def test_spectrum_leaves_out_the_numerically_zero_tail(tmp_path, monkeypatch):
    """Issue 28: with fewer texts than dimensions the last singular values are ~1e-16; drawn, they squash
    the spectrum into the top of the log axis."""
    figs = _capture(monkeypatch)
    s = np.concatenate([np.geomspace(10.0, 0.1, 40), np.full(24, 1e-15)])
    plot_spectrum(s, tmp_path / "s.png", rankme=30.0)
    ax = figs[0].axes[0]
    line = ax.get_lines()[0]
    assert len(line.get_xdata()) == 40 and min(line.get_ydata()) == pytest.approx(0.01)
    assert ax.get_ylim()[0] > 1e-4  # the axis spans the informative part, not 1e-16
    assert "24 more at numerical zero" in ax.get_xlabel()
    plot_spectrum(np.geomspace(10.0, 0.1, 40), tmp_path / "t.png")
    assert "numerical zero" not in figs[1].axes[0].get_xlabel()


def test_diagnose_report_says_how_to_read_each_measure(tmp_path):
    from embedkit.analysis.diagnose import diagnose_embeddings
    from embedkit.report import write_diagnose_report
    from embedkit.report.diagnose import reading_notes

    rng = np.random.default_rng(0)
    E = rng.standard_normal((40, 8))
    summary = diagnose_embeddings(E, lengths=rng.integers(1, 50, 40), labels=["a", "b"] * 20)
    arrays = summary.pop("_arrays")
    write_diagnose_report(tmp_path / "r.html", summary, arrays)
    html = (tmp_path / "r.html").read_text()
    assert "<th>how to read it</th>" in html
    assert "0..1, higher = the texts form more separated groups. Not an absolute scale" in html
    assert "effective number of dimensions used, 1..8" in html and "230 of 384" in html
    rows = {"RankMe": 0.5, "PH separability": 0.2, "length collapse": 0.2}
    notes = reading_notes({**summary, "rankme": 0.5, "length_collapse": {"collapse": 0.2}}, rows)
    assert "dimensional collapse" in notes["RankMe"]
    assert "long texts crowd together; try `embedkit diagnose tempscale`" in notes["length collapse"]
    assert "no length collapse" in reading_notes({**summary, "length_collapse": {"collapse": -0.01}},
                                                 rows)["length collapse"]
