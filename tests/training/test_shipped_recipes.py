"""The shipped Matryoshka, 2DMSE and Starbucks recipes: valid as shipped, and each trains for 2 steps.

The model is the one thing overridden besides the budget: a tiny random 6-layer, 384-wide BERT,
the default model's shape, so every ladder and dim list of the recipes applies unchanged.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from embedkit.errors import UntrainedSizeWarning
from embedkit.models.submodel import SIZES_FILE
from embedkit.training import load_recipe, validate_recipe
from embedkit.training.run import train_recipe

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LADDER = [[1, 32], [2, 64], [3, 128], [4, 192], [5, 256], [6, 384]]
DIMS = [32, 64, 128, 256, 384]


@pytest.fixture(scope="module")
def tiny384(tmp_path_factory):
    from embedkit.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("t384") / "m", hidden=384, layers=6, heads=6)


@pytest.mark.parametrize("name,method,sizes", [
    ("matryoshka", "matryoshka", [[6, d] for d in DIMS]),
    ("2dmse", "matryoshka2d", [[layer, d] for layer in range(1, 7) for d in DIMS]),
    ("starbucks", "starbucks", LADDER),
])
def test_shipped_recipe_trains_two_steps(name, method, sizes, tiny384, tmp_path):
    load_recipe(CONFIGS / f"{name}.yaml")  # valid as shipped (the default model, the real data paths)
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    raw.update(model=tiny384, output=str(tmp_path / "out"), eval={"sets": []})
    raw["training"].update(max_steps=2, batch_size=4, max_seq_length=24)
    raw["data"]["max_sentences"] = 16
    for extra in raw["data"].get("extra") or []:
        extra["max_sentences"] = 16
    result = train_recipe(validate_recipe(raw, f"{name}.yaml"), show_progress=False)
    assert result.global_step == 2
    recorded = json.loads((tmp_path / "out" / SIZES_FILE).read_text())
    assert recorded == {"method": method, "sizes": sizes}


def test_untrained_size_of_a_starbucks_model_warns(tiny384, tmp_path):
    """A (layers, dims) off the recorded ladder warns, naming the trained sizes; one on it does not."""
    from embedkit.models.export import export_submodel
    from embedkit.models.loading import load_encoder

    model_dir = tmp_path / "sb"
    load_encoder(tiny384).save(str(model_dir))
    (model_dir / SIZES_FILE).write_text(json.dumps({"method": "starbucks", "sizes": LADDER}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_encoder(str(model_dir), layers=2, dim=64)
        load_encoder(str(model_dir))  # the full size
    with pytest.warns(UntrainedSizeWarning, match=r"6 layers x 128 dims is not a size its starbucks training covered.*"
                                                  r"--layers 1 --dim 32, --layers 2 --dim 64.*mrl:D"):
        load_encoder(str(model_dir), dim=128)  # what mrl:128 serves: full depth, cut dims
    with pytest.warns(UntrainedSizeWarning):
        out = export_submodel(model_dir, tmp_path / "e", layers=3, dim=64)
    info = json.loads((out / "embedkit_submodel.json").read_text())
    assert info["trained"] is False and info["trained_sizes"] == LADDER
    ok = json.loads((export_submodel(model_dir, tmp_path / "f", layers=3, dim=128) / "embedkit_submodel.json").read_text())
    assert ok["trained"] is True


def test_cli_export_prints_the_warning(tiny384, tmp_path):
    from click.testing import CliRunner

    from embedkit.cli.main import cli
    from embedkit.models.loading import load_encoder

    model_dir = tmp_path / "sb"
    load_encoder(tiny384).save(str(model_dir))
    (model_dir / SIZES_FILE).write_text(json.dumps({"method": "starbucks", "sizes": LADDER}))
    res = CliRunner().invoke(cli, ["export", str(model_dir), "--layers", "2", "--dim", "32", "-o", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(lines) == 1 and "2 layers x 32 dims is not a size its starbucks training covered" in lines[0], res.stderr
