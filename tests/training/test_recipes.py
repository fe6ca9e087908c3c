from __future__ import annotations

import pytest

from embedkit.errors import EmbedkitError, RecipeError
from embedkit.training import load_recipe, validate_recipe


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
    # issue 12: numbers that were accepted and failed late (or silently did harm)
    (lambda d: d["training"].update(keep_checkpoints=-1), "training.keep_checkpoints",
     "must be >= 1, got -1 (or null to keep every checkpoint)"),
    (lambda d: d["training"].update(keep_checkpoints=0), "training.keep_checkpoints", "must be >= 1, got 0"),
    (lambda d: d["training"].update(learning_rate=float("nan")), "training.learning_rate",
     "must be a finite number, got nan"),
    (lambda d: d["loss"].update(dup_rate=5), "loss.dup_rate", "must be in [0, 1], got 5"),
    (lambda d: d["training"].update(epochs=-1), "training.epochs", "must be > 0, got -1"),
    (lambda d: d["loss"].update(temperature=float("inf")), "loss.temperature", "must be a finite number, got inf"),
    (lambda d: d["training"].update(warmup_ratio=7), "training.warmup_ratio", "must be in [0, 1), got 7"),
    (lambda d: d["training"].update(weight_decay=-3), "training.weight_decay", "must be >= 0, got -3"),
    (lambda d: d["data"].update(max_sentences=-50), "data.max_sentences", "must be >= 1, got -50 (or null for all)"),
    (lambda d: d["loss"].update(momentum=1.0), "loss.momentum", "must be in [0, 1), got 1"),
    (lambda d: d["training"].update(max_steps=0), "training.max_steps", "must be >= 1, got 0"),
    (lambda d: d["training"].update(fp16=True, bf16=True), "training.bf16", "both true"),
    (lambda d: d["sampler"].update(embed="bert"), "sampler.embed", "must be one of 'encoder', 'tfidf'"),
])
def test_bad_recipe_names_key(recipe_dict, no_model_loading, mutate, key, words):
    d = recipe_dict()
    mutate(d)
    with pytest.raises(RecipeError) as e:
        validate_recipe(d, "bad.yaml")
    msg = str(e.value)
    assert msg.startswith(f"bad.yaml: {key}:") and words in msg, msg
    assert "\n" not in msg
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


@pytest.mark.parametrize("line, key, words", [
    ("learning_rate: .nan", "training.learning_rate", "must be a finite number, got nan"),
    ("learning_rate: .inf", "training.learning_rate", "must be a finite number, got inf"),
    ("keep_checkpoints: -1", "training.keep_checkpoints", "must be >= 1, got -1"),
    ("epochs: -1", "training.epochs", "must be > 0, got -1"),
])
def test_yaml_special_numbers_refused_before_any_model_loads(tmp_path, recipe_dict, no_model_loading, line, key, words):
    import yaml

    d = recipe_dict()
    d["training"].pop(line.split(":")[0], None)
    text = yaml.safe_dump(d).replace("training:\n", "training:\n  " + line + "\n", 1)
    p = tmp_path / "r.yaml"
    p.write_text(text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(e.value).startswith(f"r.yaml: {key}: {words}"), str(e.value)


def test_invalid_utf8_recipe_is_one_line_with_byte_offset(tmp_path):
    p = tmp_path / "r.yaml"
    data = b"# " + b"x" * 997 + b"\n" + b"output: caf\xe9\n"  # the bad byte is at 1,011, line 2
    p.write_bytes(data)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(e.value) == "r.yaml:2: not valid UTF-8 (invalid continuation byte at byte 1011); save the recipe as UTF-8"


def test_losses_and_samplers_come_from_registries(recipe_dict, monkeypatch):
    from embedkit.training import registry

    assert set(registry.LOSSES) >= {"simcse", "esimcse", "mnrl"}
    assert set(registry.SAMPLERS) >= {"random", "no_duplicates", "gsimclr"}
    assert registry.LOSSES["mnrl"].columns == ("anchor", "positive")
    monkeypatch.setattr(registry, "LOSSES", dict(registry.LOSSES))
    d = recipe_dict()
    d["loss"]["name"] = "my_loss"
    with pytest.raises(RecipeError, match="unknown loss 'my_loss'; choose one of simcse, esimcse, mnrl"):
        validate_recipe(d, "r.yaml")
    built = []

    @registry.register_loss("my_loss")
    def _build(model, cfg):
        built.append(cfg["temperature"])
        return "LOSS"

    import embedkit.training.recipe as recipe_mod

    monkeypatch.setattr(recipe_mod, "LOSSES", registry.LOSSES)
    assert validate_recipe(d, "r.yaml").config["loss"]["name"] == "my_loss"
    assert registry.build_loss("my_loss", None, {"temperature": 0.1}) == "LOSS" and built == [0.1]
    plan = registry.build_sampler("no_duplicates", [], None, {})
    assert plan.batch_sampler == "no_duplicates" and plan.stats() is None


def test_with_overrides_validates(recipe_dict):
    r = validate_recipe(recipe_dict(), "r.yaml")
    with pytest.raises(RecipeError, match="r.yaml: --max-steps: must be >= 1, got -5"):
        r.with_overrides(max_steps=-5)
    r2 = r.with_overrides(max_steps=3, output="elsewhere")
    assert r2.config["training"]["max_steps"] == 3 and r2.output_option == "--out"
    assert r.output_option == "r.yaml: output"


def test_trainer_refuses_keep_checkpoints_below_one():
    from embedkit.training.trainer import EmbedkitTrainer

    for bad in (-1, 0, 1.5, True):
        with pytest.raises(EmbedkitError, match="keep_checkpoints must be"):
            EmbedkitTrainer(keep_checkpoints=bad)
