"""Issue 24: recipe sizes bounded by memory, stage pooling, checks before the model loads, hostile values."""

from __future__ import annotations

import time

import pytest
import torch

from embedkit.errors import RecipeError, ResourceError
from embedkit.training import validate_recipe

GiB = 1 << 30


@pytest.fixture()
def no_model_loading(monkeypatch):
    import embedkit.models.loading as loading

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the recipe was checked")

    monkeypatch.setattr(loading, "load_encoder", boom)


@pytest.fixture()
def memory(monkeypatch):
    """Pretend this machine has ``n`` bytes available."""

    def set_to(n):
        monkeypatch.setattr("embedkit.validation.available_memory", lambda: n)

    return set_to


def _latent(d, **pool):
    d["pooling"] = {"name": "latent_attention", "num_heads": 2, **pool}
    return d


@pytest.mark.parametrize("pool, message", [
    ({"num_latents": 100_000_000_000},
     "bad.yaml: pooling.num_latents: 100000000000: training the latent-attention pooling at width 32 needs about "
     "163.0 TiB; this machine has 8.0 GiB available — use fewer latents (NV-Embed uses 512)"),  # full-width heads
    ({"mlp_ratio": 100_000_000},
     "bad.yaml: pooling.mlp_ratio: 100000000: training the latent-attention pooling at width 32 needs about 40.3 TiB; "
     "this machine has 8.0 GiB available — use a smaller ratio (the reference uses 4)"),
])
def test_pooling_sizes_beyond_memory_are_refused_before_loading(recipe_dict, no_model_loading, memory, pool, message):
    memory(8 * GiB)
    t = time.perf_counter()
    with pytest.raises(RecipeError) as e:
        validate_recipe(_latent(recipe_dict(), **pool), "bad.yaml")
    assert str(e.value) == message and time.perf_counter() - t < 2


def test_pooling_size_is_measured_against_what_is_available(recipe_dict, no_model_loading, memory):
    d = _latent(recipe_dict(), num_latents=1_000_000)  # ~1.7 GiB to train at width 32 (2 full-width heads)
    memory(64 * GiB)
    assert validate_recipe(d, "r.yaml").config["pooling"]["num_latents"] == 1_000_000
    memory(1 * GiB)
    with pytest.raises(RecipeError, match=r"^r.yaml: pooling.num_latents: 1000000: .* needs about 1.7 GiB; this machine "
                                          r"has 1.0 GiB available"):
        validate_recipe(d, "r.yaml")
    d = _latent(recipe_dict(batch_size=10**9))  # the tokens drive it: batch_size is named
    with pytest.raises(RecipeError, match=r"^r.yaml: training.batch_size: 1000000000 texts of up to 16 tokens: "):
        validate_recipe(d, "r.yaml")


def test_pooling_checked_against_the_device_after_loading(tiny_model_path, monkeypatch):
    """A hub model's width is known only once loaded: checked there, before the module is allocated."""
    from embedkit import load_encoder
    from embedkit.training.run import apply_pooling

    model = load_encoder(tiny_model_path)
    before = type(model[1]).__name__
    monkeypatch.setattr("embedkit.validation.available_memory", lambda: 8 * GiB)
    cfg = {"name": "latent_attention", "num_latents": 10**11, "num_heads": 2, "mlp_ratio": 4}
    with pytest.raises(RecipeError, match=r"^r.yaml: pooling.num_latents: 100000000000: .* this machine has 8.0 GiB"):
        apply_pooling(model, cfg, batch_size=16, max_seq_length=16, source="r.yaml: ")
    assert type(model[1]).__name__ == before
    apply_pooling(model, {**cfg, "num_latents": 8}, batch_size=16, max_seq_length=16)
    assert type(model[1]).__name__ == "LatentAttentionPooling"


def test_the_module_checks_its_own_size_before_allocating(monkeypatch):
    from embedkit.models.pooling import LatentAttentionPooling

    monkeypatch.setattr("embedkit.validation.available_memory", lambda: 8 * GiB)
    with pytest.raises(ResourceError) as e:
        LatentAttentionPooling(384, num_latents=10**11)
    assert str(e.value) == ("latent attention pooling with num_latents=100000000000, mlp_ratio=4 at width 384 "
                            "(38,400,006,493,824 float32 parameters) need about 139.7 TiB; this machine has 8.0 GiB "
                            "available")


def test_latent_attention_folds_the_batch_into_one_attention():
    """Every token attends to the same latents: one attention over b*n queries equals b attentions."""
    import torch.nn.functional as F

    from embedkit.models.pooling import LatentAttentionPooling

    torch.manual_seed(0)
    m = LatentAttentionPooling(32, num_latents=17, num_heads=4, zero_init=False)
    x = torch.randn(5, 9, 32)
    b, n, h, dh = 5, 9, 4, m.head_dim  # full-width heads (the default): dh = 32
    q = m.to_q(m.norm_q(x)).view(b, n, h, dh).transpose(1, 2)
    k, v = m.to_kv(m.norm_kv(m.latents)).chunk(2, dim=-1)
    k = k.view(1, -1, h, dh).transpose(1, 2).expand(b, -1, -1, -1)
    v = v.view(1, -1, h, dh).transpose(1, 2).expand(b, -1, -1, -1)
    y = x + m.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, h * dh))
    y = y + m.ff_out(m.ff_act(m.ff_in(m.norm_ff(y))))
    assert torch.allclose(m.token_states(x), y, atol=1e-5)


def test_a_later_stage_may_not_set_pooling(recipe_dict, no_model_loading):
    d = recipe_dict()
    d["stages"] = [{"training": {"max_steps": 2}}, {"pooling": {"name": "latent_attention", "num_heads": 2}}]
    r = validate_recipe(d, "r.yaml")
    with pytest.raises(RecipeError) as e:
        r.stage_recipes()
    assert str(e.value) == ("r.yaml: stages[1].pooling: only the first stage sets pooling; stage 2 continues stage 1's "
                            "model, its trained pooling module included — move this pooling to the top level or to "
                            "stages[0]")
    d["stages"][1] = {"pooling": {"num_latents": 64}}  # a size without a name is refused too
    with pytest.raises(RecipeError, match=r"^r.yaml: stages\[1\].pooling: only the first stage"):
        validate_recipe(d, "r.yaml").stage_recipes()
    d["stages"][1] = {"pooling": {"name": "keep"}}
    d["stages"][0]["pooling"] = {"name": "latent_attention", "num_heads": 2}
    stages = validate_recipe(d, "r.yaml").stage_recipes()
    assert [s.config["pooling"]["name"] for s in stages] == ["latent_attention", "keep"]


def test_starbucks_with_simcse_fails_before_loading(recipe_dict, no_model_loading):
    d = recipe_dict()
    d["loss"]["starbucks"] = {"ladder": [[1, 16], [2, 32]]}
    t = time.perf_counter()
    with pytest.raises(RecipeError) as e:
        validate_recipe(d, "bad.yaml")
    assert time.perf_counter() - t < 2
    assert str(e.value) == ("bad.yaml: loss.starbucks: loss simcse cannot compute its loss from given embeddings, which "
                            "Starbucks needs for every (layers, dims) rung; use mnrl or cosent with starbucks")


def test_nan_score_in_an_eval_set_fails_before_loading(recipe_dict, tmp_path, no_model_loading):
    bad = tmp_path / "dev.tsv"
    bad.write_text("score\ts1\ts2\n1.0\ta cat\ta dog\nnan\tstock\tbank\n")
    d = recipe_dict()
    d["eval"]["sets"] = [d["eval"]["sets"][0], str(bad)]
    with pytest.raises(RecipeError) as e:
        validate_recipe(d, "bad.yaml")
    assert str(e.value) == "bad.yaml: eval.sets[1]: dev.tsv:3: score 'nan' is not finite"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["training"].update(max_seq_length=10**6),
     "training.max_seq_length: 1000000 is beyond the model's 128 positions (max_position_embeddings in "),
    (lambda d: d["training"].update(max_seq_length=10**30), "training.max_seq_length: must be in [1, 2147483647], got 1"),
    (lambda d: d["training"].update(seed=2**40), "training.seed: must be in [0, 4294967295], got 1099511627776"),
    (lambda d: d["training"].update(learning_rate=1e300), "training.learning_rate: must be in (0, 1], got 1e+300"),
    (lambda d: d["training"].update(weight_decay=1e6),
     "training.weight_decay: 1e+06 x learning_rate 0.001 must be < 1 (AdamW shrinks every weight"),
    (lambda d: d["training"].update(ddp_timeout=10**30), "training.ddp_timeout: must be in [1, 31536000]"),
    (lambda d: d["loss"].update(temperature=1e-300), "loss.temperature: must be >= 0.0001, got 1e-300"),
    (lambda d: d["loss"].update(matryoshka2d={"dims": [16, 32], "kl_temperature": 0}),
     "loss.matryoshka2d.kl_temperature: must be > 0, got 0"),
    (lambda d: d["loss"].update(matryoshka={"dims": [16, 32], "weights": [1, 1e300]}),
     "loss.matryoshka.weights: 1e+300 is above 1e+06"),
    (lambda d: d["loss"].update(name="esimcse", queue_size=10**12),
     "loss.queue_size: a queue of 1,000,000,000,000 negatives of width 32 needs about 232.8 TiB; this machine has "
     "8.0 GiB available"),
    (lambda d: d["loss"].update(name="esimcse", queue_factor=1e12),
     "loss.queue_factor: a queue of 16,000,000,000,000 negatives"),
    (lambda d: d.update(pooling={"name": "latent_attention", "num_heads": 64, "head_width": "split"}),
     "pooling.num_heads: 64 does not divide the model's width 32"),
])
def test_hostile_values_name_their_key(recipe_dict, no_model_loading, memory, mutate, message):
    memory(8 * GiB)
    d = recipe_dict()
    mutate(d)
    with pytest.raises(RecipeError) as e:
        validate_recipe(d, "bad.yaml")
    assert str(e.value).startswith("bad.yaml: " + message), str(e.value)


def test_hostile_recipe_on_the_command_line_is_one_line(recipe_dict, tmp_path, no_model_loading, memory):
    import yaml
    from click.testing import CliRunner

    from embedkit.cli.main import cli

    memory(8 * GiB)
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(_latent(recipe_dict(), num_latents=100_000_000_000)))
    res = CliRunner().invoke(cli, ["train", str(cfg)])
    assert res.exit_code == 2 and res.stderr.startswith("error: r.yaml: pooling.num_latents: 100000000000: ")
    assert len(res.stderr.strip().splitlines()) == 1
    for bad, line in [(tmp_path / "unknown.yaml", f"error: {tmp_path / 'unknown.yaml'}: recipe file not found"),
                      (tmp_path, f"error: {tmp_path}: is a folder; name a recipe file (YAML)")]:
        res = CliRunner().invoke(cli, ["train", str(bad)])
        assert res.exit_code == 2 and res.stderr.strip().splitlines() == [line]
    # an output problem found by train_recipe is one line too (no summary line before it)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("x")
    cfg.write_text(yaml.safe_dump({**recipe_dict(), "output": str(tmp_path / "taken")}))
    res = CliRunner().invoke(cli, ["train", str(cfg)])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "not an embedkit model" in res.stderr


def test_a_good_recipe_still_validates(recipe_dict, no_model_loading):
    r = validate_recipe(_latent(recipe_dict(), num_latents=8), "r.yaml")
    assert r.config["pooling"]["num_latents"] == 8 and r.config["training"]["max_seq_length"] == 16
