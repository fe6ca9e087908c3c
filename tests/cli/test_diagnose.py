from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from tiny_models import WORDS, tiny_bert_sentence_transformer, tiny_gpt2  # noqa: E402

from embedkit.cli.main import main  # noqa: E402


def run(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    tiny_bert_sentence_transformer(d / "build").save(str(d / "model"))
    return d / "model"


@pytest.fixture
def texts(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDKIT_CACHE", str(tmp_path / "cache"))
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(60)]
    f = tmp_path / "texts.txt"
    f.write_text("\n".join(lines) + "\n")
    lab = tmp_path / "labels.txt"
    lab.write_text("\n".join("ab"[i % 2] for i in range(60)) + "\n")
    return f, lab


def test_diagnose_json_and_report(st_dir, texts, tmp_path, capsys):
    f, lab = texts
    report = tmp_path / "r.html"
    code, out, err = run(["diagnose", "--model", str(st_dir), "--texts", str(f), "--labels", str(lab),
                          "--report", str(report), "--json"], capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["n_texts"] == 60 and s["dim"] == 32
    assert 1 <= s["rankme"] <= 32 and "fisher_ratio" in s
    assert 0 <= s["separability"]["separability"] <= 1
    assert len(s["length_collapse"]["buckets"]) >= 2
    assert "direct_bias" in s["bias"]
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 4 and "RankMe" in html


def test_diagnose_text_output_and_errors(st_dir, texts, tmp_path, capsys):
    f, lab = texts
    code, out, _ = run(["diagnose", "--model", str(st_dir), "--texts", str(f), "--no-bias", "--plots",
                        str(tmp_path / "plots")], capsys)
    assert code == 0 and "RankMe" in out and "separability" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "barcode.png", "embedkit-output.json", "length.png", "spectrum.png"]
    bad = tmp_path / "few.txt"
    bad.write_text("a\nb\n")
    lab.write_text("a\nb\n")
    code, _, err = run(["diagnose", "--model", str(st_dir), "--texts", str(f), "--labels", str(lab), "--no-bias"], capsys)
    assert code == 2 and "counts must match" in err and "\n" == err[-1] and err.count("\n") == 1
    code, _, err = run(["diagnose", "--model", str(tmp_path / "nope"), "--texts", str(f)], capsys)
    assert code == 2 and "does not exist" in err


def test_ches_command(tmp_path, capsys):
    model, tok = tiny_gpt2(tmp_path / "lm")
    model.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    pairs = tmp_path / "p.jsonl"
    rows = [{"prompt": "the man is", "chosen": "a doctor", "rejected": "a nurse and the"} for _ in range(3)]
    rows += [{"prompt": "she", "chosen": "is good " * k, "rejected": "bad"} for k in range(1, 8)]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    kept = tmp_path / "kept.jsonl"
    code, out, err = run(["diagnose", "ches", "--model", str(tmp_path / "lm"), "--pairs", str(pairs), "--top", "20%",
                          "--filter-out", str(kept), "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert len(res["top"]) == 2
    assert res["top"][0]["ches_normalized"] >= res["top"][1]["ches_normalized"]
    assert len(kept.read_text().splitlines()) == 8
    pairs.write_text(json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    code, _, err = run(["diagnose", "ches", "--model", str(tmp_path / "lm"), "--pairs", str(pairs)], capsys)
    assert code == 2 and "missing field 'rejected'" in err


def test_tempscale_command(st_dir, texts, tmp_path, capsys):
    f, _ = texts
    code, out, err = run(["diagnose", "tempscale", "--model", str(st_dir), "--texts", str(f), "--taus", "0.5,2",
                          "--min-agreement", "0", "--out", str(tmp_path / "rep"), "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["tau"] in (0.5, 1.0, 2.0) and len(res["results"]) == 3
    assert (tmp_path / "rep").exists() == res["repair"]  # a model is written only for a real repair
    code, out, err = run(["diagnose", "tempscale", "--model", str(st_dir), "--texts", str(f), "--tau", "0.5", "--out",
                          str(tmp_path / "rep2"), "--json"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "rep2" / "embedkit_tempscale.json").read_text())["temperature"] == 0.5
    code, _, err = run(["diagnose", "tempscale", "--texts", str(f), "--taus", "a,b"], capsys)
    assert code == 2 and "--taus" in err


def test_tempscale_writes_no_model_when_nothing_to_repair(tmp_path, monkeypatch):
    """A tau search without a significant gain reports "nothing to repair" and writes no folder."""
    import importlib

    from click.testing import CliRunner

    from embedkit.cli.main import cli
    from embedkit.testing import make_tiny_model

    model = make_tiny_model(tmp_path / "m")
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(" ".join(["cat"] * k) for k in range(1, 31)) + "\n")
    lc = importlib.import_module("embedkit.analysis.length_collapse")  # the package re-exports a function of that name
    monkeypatch.setattr(lc, "search_temperature", lambda *a, **k: {
        "best_tau": 1.0, "repair": False, "candidate_tau": 0.95, "reason": "nothing to repair: the best gain 0.0010 "
        "is below min_gain 0.01", "results": []})
    out = tmp_path / "repaired"
    r = CliRunner().invoke(cli, ["diagnose", "tempscale", "-m", model, "--corpus", str(texts), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "nothing to repair" in r.output and not out.exists()
