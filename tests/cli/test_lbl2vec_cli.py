from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from embedkit.cli.main import cli

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "topics"))
from lbl2vec_corpus import FILLER, KEYWORDS, TOPICS, planted_corpus  # noqa: E402

D2V = ["--vector-size", "32", "--window", "5", "--min-count", "2", "--sample", "0", "--epochs", "20",
       "--workers", "1", "--min-num-docs", "10"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("l2v")
    texts, gold = planted_corpus()
    (d / "docs.tsv").write_text("label\ttext\n" + "".join(f"{g}\t{t}\n" for g, t in zip(gold, texts)))
    (d / "kw.tsv").write_text("".join(f"{k}\t{' '.join(v)}\n" for k, v in KEYWORDS.items()))
    (d / "new.txt").write_text("the striker scored a goal for the team\nstock prices fell at the bank\n")
    return d


@pytest.fixture(scope="module")
def model_dir(files):
    out = files / "model"
    res = CliRunner().invoke(cli, ["lbl2vec", "fit", "--docs", str(files / "docs.tsv"), "--keywords",
                                   str(files / "kw.tsv"), "--out", str(out), *D2V, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["kind"] == "doc2vec" and summary["docs_per_label"] == {"sport": 10, "finance": 10, "space": 10}
    assert summary["training_documents"]["macro_f1"] > 0.95
    assert min(summary["training_documents"]["roc_auc"].values()) > 0.95
    return out


def test_predict_and_search(model_dir, files):
    r = CliRunner()
    res = r.invoke(cli, ["lbl2vec", "predict", str(model_dir), "--docs", str(files / "new.txt"), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["predictions"]
    assert [row["label"] for row in rows] == ["sport", "finance"]
    assert set(rows[0]["scores"]) == {"sport", "finance", "space"}
    res = r.invoke(cli, ["lbl2vec", "predict", str(model_dir), "--json"])  # training documents, with their F1
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert len(out["predictions"]) == 240
    res = r.invoke(cli, ["lbl2vec", "predict", str(model_dir), "--docs", str(files / "docs.tsv")])
    assert res.exit_code == 0 and "macro-F1" in res.stderr
    res = r.invoke(cli, ["lbl2vec", "search", str(model_dir), "--label", "space", "-k", "3", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)["hits"]
    assert len(hits) == 3 and all(w in TOPICS["space"] + FILLER for h in hits for w in h["text"].split())
    res = r.invoke(cli, ["lbl2vec", "search", str(model_dir), "--label", "space", "-k", "2"])
    assert res.exit_code == 0 and res.stdout.count("\n") == 2


def run(args):
    return subprocess.run([sys.executable, "-m", "embedkit.cli.main", *args], capture_output=True, text=True)


def test_errors_are_one_line_with_exit_2(model_dir, files, tmp_path):
    res = run(["lbl2vec", "search", str(model_dir), "--label", "weather"])
    assert res.returncode == 2 and "unknown label 'weather'" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "kw.tsv").write_text("sport\tfootball\nfinance\t \n")
    res = run(["lbl2vec", "fit", "--docs", str(files / "docs.tsv"), "--keywords", str(tmp_path / "kw.tsv"),
               "--out", str(tmp_path / "m"), *D2V])
    assert res.returncode == 2 and "label 'finance' has no keywords" in res.stderr
    (tmp_path / "empty.tsv").write_text("label\ttext\nsport\ta goal\nsport\t \n")
    res = run(["lbl2vec", "predict", str(model_dir), "--docs", str(tmp_path / "empty.tsv")])
    assert res.returncode == 2 and "empty.tsv:3: empty text" in res.stderr
    res = run(["lbl2vec", "predict", str(tmp_path / "nope")])
    assert res.returncode == 2 and "no Lbl2Vec model folder" in res.stderr
    (tmp_path / "kw2.tsv").write_text("sport\tfootball zeppelin\nfinance\tbank\n")
    res = run(["lbl2vec", "fit", "--docs", str(files / "docs.tsv"), "--keywords", str(tmp_path / "kw2.tsv"),
               "--out", str(tmp_path / "m2"), *D2V, "--unknown-keywords", "error"])
    assert res.returncode == 2 and "'zeppelin' not in the Doc2Vec vocabulary" in res.stderr


def test_transformer_encoder(files, tmp_path, isolated_cache):
    from embedkit.testing import make_tiny_model

    # seed 1: a random tiny encoder whose label document selections do not collapse on this corpus
    tiny = make_tiny_model(tmp_path / "tiny", seed=1)
    out = tmp_path / "t"
    res = CliRunner().invoke(cli, ["lbl2vec", "fit", "--docs", str(files / "docs.tsv"), "--keywords",
                                   str(files / "kw.tsv"), "--out", str(out), "--encoder", tiny,
                                   "--min-num-docs", "5", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kind"] == "transformer"
    res = CliRunner().invoke(cli, ["lbl2vec", "predict", str(out), "--docs", str(files / "new.txt"), "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["predictions"]) == 2


def test_min_num_docs_defaults_to_auto(files, tmp_path, invoke):
    d2v = [a for a in D2V if a not in ("--min-num-docs", "10")]
    res = invoke("lbl2vec", "fit", "--corpus", files / "docs.tsv", "--keywords", files / "kw.tsv", "--out",
                 tmp_path / "m", *d2v, "--json")
    assert res.code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["min_num_docs"] == 40 and out["docs_per_label"] == {"sport": 40, "finance": 40, "space": 40}
    assert out["training_documents"]["macro_f1"] > 0.95
    res = invoke("lbl2vec", "fit", "--corpus", files / "docs.tsv", "--keywords", files / "kw.tsv", "--out",
                 tmp_path / "m2", *d2v, "--min-num-docs", "auto")
    assert res.code == 0 and "(min_num_docs auto = 40)" in res.stdout
    for bad in ("0", "many"):
        invoke("lbl2vec", "fit", "--corpus", files / "docs.tsv", "--keywords", files / "kw.tsv", "--out",
               tmp_path / "m3", "--min-num-docs", bad).one_line_error("--min-num-docs")
    help_text = invoke("lbl2vec", "fit", "--help").stdout
    assert "half the documents per label" in help_text and "[default: auto]" in help_text
