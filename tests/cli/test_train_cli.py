from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from train_fixtures import recipe_dict, tiny_corpus  # noqa: E402,F401


def run(args, cwd=None):
    return subprocess.run([sys.executable, "-m", "embedkit.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_train_cli_end_to_end(recipe_dict, tmp_path):  # noqa: F811
    d = recipe_dict("esimcse", "gsimclr")
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(d))
    out = tmp_path / "model"
    r = run(["train", str(cfg), "--max-steps", "4", "--output", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith(f"trained {out}: 4 steps")
    assert "G-SimCLR batches without repeated cluster" in r.stdout
    assert "step 2: sts-dev_spearman" in r.stderr  # progress and evaluations on stderr
    report = json.loads((out / "train_report.json").read_text())
    assert report["global_step"] == 4 and report["best_metric"] is not None
    from sentence_transformers import SentenceTransformer

    from embedkit import load_encoder

    assert SentenceTransformer(str(out), device="cpu").encode(["the cat"]).shape == (1, 32)
    assert load_encoder(str(out)).encode(["the cat"]).shape == (1, 32)
    # --resume with nothing left to do finishes at the same step
    r = run(["train", str(cfg), "--max-steps", "4", "--out", str(out), "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr
    # an existing folder that embedkit did not write is never replaced
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.txt").write_text("x")
    r = run(["train", str(cfg), "--max-steps", "4", "--out", str(tmp_path / "thesis"), "--quiet"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not an embedkit model" in r.stderr
    assert (tmp_path / "thesis" / "thesis.txt").read_text() == "x"


def test_train_cli_bad_recipe_one_line(recipe_dict, tmp_path):  # noqa: F811
    d = recipe_dict()
    d["loss"]["name"] = "triplet"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(d))
    r = run(["train", str(cfg)])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: bad.yaml: loss.name: unknown loss 'triplet'; choose one of simcse, esimcse, mnrl")
    r = run(["train", str(tmp_path / "missing.yaml")])
    assert r.returncode == 2 and "recipe file not found" in r.stderr


def test_train_help_has_example():
    r = run(["train", "--help"])
    assert r.returncode == 0 and "embedkit train configs/esimcse.yaml" in r.stdout
