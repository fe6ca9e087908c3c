"""``embedkit eval mteb|local``: spec parsing, error cases, JSON output, result files (tiny model)."""

from __future__ import annotations

import json

import pytest

from embedkit.cli.main import main


def _run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def files(tmp_path):
    import numpy as np

    from embedkit.testing import WORDS

    rng = np.random.default_rng(0)
    sent = lambda: " ".join(rng.choice(WORDS, size=7))  # noqa: E731
    sts = tmp_path / "pairs.tsv"
    sts.write_text("score\tsentence1\tsentence2\n" + "".join(f"{i % 5}.0\t{sent()}\t{sent()}\n" for i in range(20)))
    lab = tmp_path / "lab.tsv"
    lab.write_text("label\ttext\n" + "".join(f"L{i % 3}\t{sent()}\n" for i in range(30)))
    return sts, lab


def test_local_json_and_outputs(tiny_model_path, files, tmp_path, capsys, isolated_cache):
    sts, lab = files
    out = tmp_path / "out"
    code, stdout, err = _run(["eval", "local", "--model", str(tiny_model_path), "--sts", str(sts), "--clustering", str(lab),
                              "--specs", "binary;mrl:16,int8", "--output", str(out), "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["specs"] == ["float", "binary", "mrl:16,int8"]
    assert {r["task"] for r in res["rows"]} == {"LocalSTS-pairs", "LocalClustering-lab"}
    assert len(res["rows"]) == 6
    for name in ("summary.json", "summary.md", "summary.png"):
        assert (out / name).stat().st_size > 0
    assert "| LocalSTS-pairs | cosine_spearman |" in (out / "summary.md").read_text()
    assert len(list((out / "results").rglob("LocalSTS-pairs.json"))) == 3
    assert "LocalSTS-pairs" in err  # the per-task progress bar


def test_local_table_output(tiny_model_path, files, capsys, isolated_cache):
    sts, _ = files
    code, stdout, err = _run(["eval", "local", "-m", str(tiny_model_path), "--sts", str(sts), "--limit", "10"], capsys)
    assert code == 0, err
    assert "| task | metric | float (128 B) |" in stdout


@pytest.mark.parametrize("spec, msg", [("float;int9", "unknown compression stage 'int9'"), ("mrl:abc", "integer argument"),
                                       (";;", "--specs is empty")])
def test_bad_spec(files, capsys, spec, msg):
    sts, _ = files
    code, _, err = _run(["eval", "local", "--sts", str(sts), "--specs", spec], capsys)
    assert code == 2 and msg in err and "Traceback" not in err


def test_malformed_files(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("score\tsentence1\tsentence2\nxx\ta\tb\n")
    code, _, err = _run(["eval", "local", "--sts", str(bad)], capsys)
    assert code == 2 and "bad.tsv:2: score 'xx' is not a number" in err
    code, _, err = _run(["eval", "local", "--beir", str(tmp_path)], capsys)
    assert code == 2 and "corpus.jsonl" in err
    code, _, err = _run(["eval", "local", "--classification", str(tmp_path / "nope.tsv")], capsys)
    assert code == 2 and "nope.tsv: file not found" in err
    code, _, err = _run(["eval", "local"], capsys)
    assert code == 2 and "--sts FILE" in err


def test_mteb_offline_fails_fast_naming_local(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = _run(["eval", "mteb", "--tasks", "STSBenchmark", "--specs", "float;binary"], capsys)
    assert code == 2 and "offline" in err and "embedkit eval local" in err


def test_mteb_unknown_task_and_bad_spec(capsys):
    code, _, err = _run(["eval", "mteb", "--tasks", "STSBenchmrk"], capsys)
    assert code == 2 and "unknown MTEB task 'STSBenchmrk'" in err and "did you mean" in err
    code, _, err = _run(["eval", "mteb", "--tasks", "STSBenchmark", "--specs", "binary,int8"], capsys)
    assert code == 2 and "last stage" in err


def test_registered_style_task_through_suite(tiny_model, isolated_cache):
    """A task defined like mteb's registered ones (class-level metadata, own load_data) runs through the suite."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    from embedkit.evaluation.suite import run_suite

    class MiniSTS(AbsTaskSTS):
        metadata = TaskMetadata(name="EmbedkitMiniSTS", description="test", dataset={"path": "NA", "revision": "NA"},
                                type="STS", main_score="cosine_spearman", eval_splits=["test"], eval_langs=["eng-Latn"],
                                category="t2t", modalities=["text"])
        min_score, max_score = 0, 5

        def load_data(self, **kwargs):
            self.dataset = DatasetDict({"test": Dataset.from_dict({
                "sentence1": ["the cat eat food", "stock price high", "python code error", "the dog run fast"],
                "sentence2": ["a kitten eat", "market rate low", "bug in the program", "cow sleep"],
                "score": [4.5, 2.0, 4.0, 0.5]})})
            self.data_loaded = True

    res = run_suite(tiny_model, [MiniSTS()], "float;binary", show_progress=False)
    assert [r["spec"] for r in res["rows"]] == ["float", "binary"]
