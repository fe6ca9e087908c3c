"""The training output folder: never replace what embedkit did not write (issue 12)."""

from __future__ import annotations

import json
import logging

import pytest

from embedkit._io import output_kind
from embedkit.errors import OutputExistsError
from embedkit.training import train_recipe, validate_recipe


@pytest.fixture()
def no_model_loading(monkeypatch):
    import embedkit.models.loading as loading

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the output folder was checked")

    monkeypatch.setattr(loading, "load_encoder", boom)


def test_foreign_folder_is_refused_before_any_model_loads(recipe_dict, tmp_path, no_model_loading):
    d = recipe_dict()
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    r = validate_recipe({**d, "output": str(out)}, "r.yaml")
    with pytest.raises(OutputExistsError) as e:
        train_recipe(r, show_progress=False)
    assert str(e.value) == (f"r.yaml: output {str(out)!r} is not empty and not an embedkit model; embedkit will not "
                            "replace it — name a new folder")
    assert (out / "chapter1.tex").read_text() == "years of work"
    # the CLI's --output names the option
    with pytest.raises(OutputExistsError, match=r"^--out "):
        train_recipe(r.with_overrides(output=str(out)), show_progress=False)
    # the training data itself is never an output
    with pytest.raises(OutputExistsError, match="would overwrite the input"):
        train_recipe(validate_recipe({**d, "output": d["data"]["train"]}, "r.yaml"), show_progress=False)


def test_rerun_needs_overwrite_and_resume_keeps_working(recipe_dict, tmp_path, caplog):
    d = recipe_dict("simcse", max_steps=2, checkpoint_every=2)
    d["output"] = str(tmp_path / "model")
    d["checkpoint_dir"] = str(tmp_path / "ckpt")
    r = validate_recipe(d, "r.yaml")
    with caplog.at_level(logging.INFO, logger="embedkit"):
        train_recipe(r, show_progress=False)
    assert output_kind(r.output) == "model"
    assert json.loads((r.output / "train_report.json").read_text())["global_step"] == 2
    assert any("training sentences from" in m for m in caplog.messages)  # progress goes to the logger
    assert any(m.startswith("step 2: sts-dev_spearman") for m in caplog.messages)
    # a new run (checkpoints removed) into the finished model folder needs overwrite=True
    import shutil

    shutil.rmtree(r.checkpoint_dir)
    with pytest.raises(OutputExistsError, match="already holds an embedkit model; pass --overwrite"):
        train_recipe(r, show_progress=False)
    res = train_recipe(r, show_progress=False, overwrite=True)
    assert res.global_step == 2 and output_kind(r.output) == "model"
    # --resume into the existing run of the same kind keeps working (nothing left to do)
    res = train_recipe(r, show_progress=False, resume=True)
    assert res.resumed_from == str(r.checkpoint_dir / "checkpoint-2") and output_kind(r.output) == "model"
