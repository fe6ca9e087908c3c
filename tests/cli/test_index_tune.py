"""`embedkit index tune` and `index build --budget-bytes` (issue 30): table, JSON, report folder, the choice
recorded in the manifest, one-line errors."""

import json

import numpy as np
import pytest

from embedkit.testing import WORDS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(1)
    p = tmp_path_factory.mktemp("tune") / "docs.txt"
    p.write_text("\n".join(" ".join(rng.choice(WORDS, 7)) for _ in range(90)) + "\n")
    return p


def test_tune_prints_the_pareto_table_and_writes_a_report(invoke, tiny_model_path, corpus, tmp_path, isolated_cache):
    out = tmp_path / "report"
    r = invoke("index", "tune", "-c", corpus, "-m", tiny_model_path, "--budget-bytes", 8, "-o", out, "-q")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["configuration", "agreement@10", "B/vec"]
    chosen = [line for line in lines if line.startswith("*")]
    assert len(chosen) == 1 and "2L/32d" in chosen[0]
    assert lines[-1].startswith("chosen: 2L/32d, ") and f"report in {out}" in lines[-1]
    report = json.loads((out / "tune.json").read_text())
    assert report["quality_metric"] == "agreement@10" and report["best"]["bytes_per_vector"] <= 8
    assert (out / "tune.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "embedkit-output.json").read_text())["kind"] == "tune-report"

    j = invoke("index", "tune", "-c", corpus, "-m", tiny_model_path, "--max-ram", "2KB", "--budget-bytes", 8,
               "--json", "-q")
    assert j.code == 0, j.stderr
    res = json.loads(j.stdout)
    assert res["settings"]["max_ram"] == 2000 and res["settings"]["bytes_per_vector_limit"] == 8
    # --max-ram counts fixed costs: the budget-only choice (a PQ codebook) does not fit 2 KB, a smaller one does
    assert res["best"]["ram_bytes"] <= 2000 < report["best"]["ram_bytes"]
    assert res["best"]["quality"] <= report["best"]["quality"]


def test_build_by_budget_records_the_choice(invoke, tiny_model_path, corpus, tmp_path, isolated_cache):
    from embedkit import EmbeddingIndex

    out = tmp_path / "ix"
    r = invoke("index", "build", "-c", corpus, "-m", tiny_model_path, "-o", out, "--budget-bytes", 6,
               "--max-query-ms", 1000, "--json", "-q")
    assert r.code == 0, r.stderr
    summary = json.loads(r.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    tuning = manifest["tuning"]
    assert tuning == summary["tuning"]
    assert tuning["spec"] == manifest["spec"] == summary["spec"] and tuning["index_type"] == manifest["backend"]
    assert tuning["code_bytes_per_vector"] == manifest["code_size"] <= 6
    assert tuning["budget_bytes"] == 6 and tuning["max_query_ms"] == 1000 and tuning["query_ms"] <= 1000
    assert tuning["quality_metric"] == "agreement@10" and 0 <= tuning["quality"] <= 1
    assert EmbeddingIndex.load(out).tuning == tuning


@pytest.mark.parametrize("args, fragment", [
    (["--budget-bytes", 8, "--spec", "binary"], "--spec cannot be combined with --budget-bytes/--max-ram/--max-query-ms"),
    (["--max-query-ms", 5], "give a budget: --budget-bytes B (bytes per vector) or --max-ram SIZE"),
    (["--max-ram", "lots"], "--max-ram 'lots': not a size"),
])
def test_build_budget_errors_are_one_line(invoke, corpus, tmp_path, no_model, args, fragment):
    invoke("index", "build", "-c", corpus, "-o", tmp_path / "ix", *args).one_line_error(fragment)


def test_tune_errors_are_one_line(invoke, tiny_model_path, corpus, tmp_path, isolated_cache):
    invoke("index", "tune", "-c", corpus, "--budget-bytes", 8, "--queries", corpus).one_line_error(
        "give --queries and --qrels together")
    invoke("index", "tune", "-c", corpus, "-m", tiny_model_path, "--budget-bytes", 2, "-q").one_line_error(
        "--budget-bytes 2: smaller than any candidate; the smallest needs 4 bytes per vector (binary at 2 layers x 32 dims)")


def test_throughput_floor_no_size_meets_is_one_line(invoke, tiny_model_path, corpus, isolated_cache):
    r = invoke("index", "tune", "-c", corpus, "-m", tiny_model_path, "--budget-bytes", 8, "--min-docs-per-s", 1e12,
               "-q")
    assert r.code != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --min-docs-per-s 1e+12: no model size encodes that fast; "
                                               "the fastest measured, 2 layers x 32 dims, did ")
