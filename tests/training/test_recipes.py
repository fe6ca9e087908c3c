from __future__ import annotations

import pytest

from embedkit.errors import EmbedkitError
from embedkit.training.recipes import RecipeError, load_recipe, validate_recipe


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Fail loudly if anything tries to load a model: validation must come first."""
    import embedkit.models.loading as loading

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the recipe was validated")

    monkeypatch.setattr(loading, "load_encoder", boom)


def test_valid_recipe_defaults(recipe_dict):
    r = validate_recipe(recipe_dict("esimcse"), "r.yaml")
    assert r.config["loss"]["momentum"] == 0.995 and r.config["loss"]["dup_rate"] == 0.32
    assert r.config["loss"]["queue_factor"] == 2.5 and r.config["loss"]["temperature"] == 0.05
    assert r.checkpoint_dir.name.endswith(".checkpoints")


@pytest.mark.parametrize("mutate, key, words", [
    (lambda d: d["loss"].update(name="simcsee"), "loss.name", "unknown loss 'simcsee'"),
    (lambda d: d["data"].update(train="/nonexistent/train.txt"), "data.train", "file not found"),
    (lambda d: d["training"].update(batch_size="big"), "training.batch_size", "must be an integer"),
    (lambda d: d["training"].update(learning_rate=[1]), "training.learning_rate", "must be a number"),
    (lambda d: d["training"].update(batchsize=3), "training.batchsize", "unknown key"),
    (lambda d: d["sampler"].update(name="gsimclrr"), "sampler.name", "unknown sampler"),
    (lambda d: d["eval"].update(sets=["/nope.tsv"]), "eval.sets[0]", "file not found"),
    (lambda d: d.pop("output"), "output", "required key is missing"),
    (lambda d: d.update(model="/no/such/model"), "model", "does not exist"),
])
def test_bad_recipe_names_key(recipe_dict, no_model_loading, mutate, key, words):
    d = recipe_dict()
    mutate(d)
    with pytest.raises(RecipeError) as e:
        validate_recipe(d, "bad.yaml")
    msg = str(e.value)
    assert msg.startswith(f"bad.yaml: {key}:") and words in msg, msg
    assert isinstance(e.value, EmbedkitError)


def test_yaml_float_without_dot_and_bad_yaml(tmp_path, recipe_dict):
    import yaml

    d = recipe_dict()
    d["training"]["learning_rate"] = "3e-5"  # YAML 1.1 reads 3e-5 as a string
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(d))
    assert load_recipe(p).config["training"]["learning_rate"] == 3e-5
    p.write_text("loss: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)


def test_shipped_configs_validate(monkeypatch, tmp_path):
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert len(configs) >= 4
    for c in configs:
        r = load_recipe(c)
        assert r.config["loss"]["name"] in ("simcse", "esimcse", "mnrl")
