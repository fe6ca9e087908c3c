"""NV-Embed in recipes (issue 27): the shipped two-stage recipe, mining inside a recipe, the stage-2 rules,
per-dataset instructions, and the latent-attention head width key."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from embedkit.errors import RecipeError
from embedkit.training import validate_recipe
from embedkit.training.run import train_recipe

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "nvembed.yaml"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A BEIR folder (40 documents, 16 queries, 20 train qrels) and an STS file (48 pairs), tiny-vocabulary words."""
    from embedkit.testing import WORDS

    d = tmp_path_factory.mktemp("nvdata")
    rng = random.Random(3)

    def sent(n=7):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    beir = d / "beir"
    (beir / "qrels").mkdir(parents=True)
    queries = [sent(5) for _ in range(16)]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                                                for i, q in enumerate(queries)))
    docs = [queries[i] + " " + sent(2) if i < 16 else sent(12) for i in range(40)]  # d0..d15: near their query
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(docs)))
    qrels = [f"q{i}\td{i}\t1" for i in range(16)] + [f"q{i}\td{20 + i}\t1" for i in range(4)]  # 4 with 2 positives
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    sts = d / "sts.tsv"
    rows = []
    for i in range(48):
        a = sent()
        rows.append(f"{[4.6, 1.0, 4.0][i % 3]:.1f}\t{a}\t{a + ' ' + sent(1) if i % 3 != 1 else sent()}\n")
    sts.write_text("score\tsentence1\tsentence2\n" + "".join(rows))
    return {"beir": beir, "sts": sts}


def _shipped(tiny_model_path, small_data, tmp_path) -> dict:
    """configs/nvembed.yaml as shipped, with the model, data, steps and output replaced (as other recipe tests do)."""
    r = yaml.safe_load(CONFIG.read_text())
    r["model"] = tiny_model_path
    r["data"]["train"] = str(small_data["beir"])
    r["stages"][1]["data"]["extra"][0]["train"] = str(small_data["sts"])
    r["training"].update(batch_size=4, max_steps=1, checkpoint_every=1, max_seq_length=16)
    # a random tiny encoder scores every pair of texts about 0.95: consider every document a candidate
    r["data"]["mine"]["candidates"] = 200
    r["stages"][1]["data"]["extra"][0]["mine"]["candidates"] = 200
    r["output"] = str(tmp_path / "nvembed")
    return r


def test_the_shipped_recipe_validates_as_the_paper_describes_it():
    r = validate_recipe(yaml.safe_load(CONFIG.read_text()), "nvembed.yaml")
    one, two = r.stage_recipes()
    assert one.config["loss"]["in_batch_negatives"] is True and one.config["data"]["mine"]["negatives"] == 3
    assert one.config["pooling"] == {"name": "latent_attention", "num_latents": 512, "num_heads": 8,
                                     "head_width": "full", "mlp_ratio": 4}
    assert one.config["training"]["prompts"]["anchor"].startswith("Instruct: Given a scientific claim")
    # stage 2: in-batch negatives off for the retrieval pairs too (NV-Embed section 3.3), STS blended in
    assert two.config["loss"]["in_batch_negatives"] is False and two.config["data"]["mine"]["negatives"] == 3
    (sts,) = two.extra
    assert sts["format"] == "scored_pairs" and sts["mine"]["min_score"] == 4.0
    assert sts["loss"]["in_batch_negatives"] is False and sts["prompts"].startswith("Instruct: Retrieve semantically")
    assert one.config["data"]["mine"]["model"] == two.config["data"]["mine"]["model"] == "default"  # one miner


def test_the_shipped_recipe_runs_both_stages_on_a_tiny_model(tiny_model_path, small_data, tmp_path, isolated_cache):
    from embedkit.models.loading import load_encoder

    rec = validate_recipe(_shipped(tiny_model_path, small_data, tmp_path), "nvembed.yaml")
    res = train_recipe(rec, show_progress=False)
    assert res.global_step == 1
    report = json.loads((rec.output / "train_report.json").read_text())
    first = json.loads(Path(str(rec.output) + ".stage1", "train_report.json").read_text())
    assert first["recipe"]["loss"]["in_batch_negatives"] is True
    assert report["recipe"]["loss"]["in_batch_negatives"] is False
    assert first["mining"]["data.train"]["model"] == report["mining"]["data.train"]["model"] == tiny_model_path
    assert first["mining"]["data.train"]["pairs"] == 20 and report["mining"]["data.extra[0]"]["pairs"] == 2 * 32
    model = load_encoder(rec.output, device="cpu")
    pool = model[1]
    assert type(pool).__name__ == "LatentAttentionPooling"
    assert (pool.num_heads, pool.head_dim, pool.num_latents) == (8, 32, 512)  # full-width heads on width 32


def test_stage_two_prompts_are_per_dataset():
    from embedkit.training.run import _prompts

    q = {"anchor": "Instruct: find\nQuery: "}
    assert _prompts(q, [{"prompts": None}]) == q  # one mapping for every dataset, as before
    assert _prompts(q, [{"prompts": "Instruct: same\nQuery: "}, {"prompts": None}]) == {
        "main": q, "extra0": "Instruct: same\nQuery: ", "extra1": q}
    assert _prompts(None, [{"prompts": "S: "}]) == {"main": {}, "extra0": "S: "}


def _pairs_recipe(tiny_model_path, small_data, tmp_path, **data):
    return {"model": tiny_model_path, "output": str(tmp_path / "o"), "loss": {"name": "mnrl"}, "eval": {"sets": []},
            "data": {"train": str(small_data["beir"]), "format": "beir", **data},
            "training": {"batch_size": 4, "max_steps": 1, "checkpoint_every": 1, "max_seq_length": 16}}


@pytest.mark.parametrize("change, message", [
    (lambda r: r["data"].update(mine={"negativs": 3}),
     "r.yaml: data.mine.negativs: unknown key; allowed here: candidates, max_positive_ratio, min_score, model, "
     "negatives, spec"),
    (lambda r: r["data"].update(mine={"max_positive_ratio": 1.5}),
     "r.yaml: data.mine.max_positive_ratio: must be in (0, 1], got 1.5"),
    (lambda r: r["loss"].update(in_batch_negatives=False),
     "r.yaml: loss.in_batch_negatives: false scores each anchor against its own negatives only, and data.format beir "
     "has none; use format pairs with negative columns (e.g. from `embedkit mine`)"),
    (lambda r: r.update(pooling={"name": "latent_attention", "head_width": "half"}),
     "r.yaml: pooling.head_width: must be one of 'full', 'split', got 'half'"),
])
def test_nvembed_keys_fail_before_any_model_loads(tiny_model_path, small_data, tmp_path, change, message):
    r = _pairs_recipe(tiny_model_path, small_data, tmp_path)
    change(r)
    with pytest.raises(RecipeError) as e:
        validate_recipe(r, "r.yaml")
    assert str(e.value) == message


def test_mining_needs_a_beir_folder_or_an_sts_file(tiny_model_path, small_data, tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("anchor\tpositive\na cat\tthe cat\n")
    r = _pairs_recipe(tiny_model_path, small_data, tmp_path, mine={"negatives": 2})
    r["data"].update(train=str(p), format="pairs")
    with pytest.raises(RecipeError, match=r"^r.yaml: data.mine: mining needs format beir .* not pairs$"):
        validate_recipe(r, "r.yaml")


def test_own_negatives_only_on_a_file_without_negatives_stops_before_loading(tiny_model_path, small_data, tmp_path,
                                                                              monkeypatch):
    from embedkit.models import loading

    p = tmp_path / "pairs.tsv"
    p.write_text("anchor\tpositive\n" + "".join(f"a{i} cat\tthe cat {i}\n" for i in range(8)))
    r = _pairs_recipe(tiny_model_path, small_data, tmp_path)
    r["data"] = {"train": str(p), "format": "pairs"}
    r["loss"]["in_batch_negatives"] = False
    monkeypatch.setattr(loading, "load_encoder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    with pytest.raises(RecipeError) as e:
        train_recipe(validate_recipe(r, "r.yaml"), show_progress=False)
    assert str(e.value) == (f"r.yaml: data.train: {p} has no negative columns, and loss.in_batch_negatives: false "
                            "scores each anchor against its own negatives only; add them with `embedkit mine`")


@pytest.mark.parametrize("width, head_dim", [("full", 32), ("split", 16)])
def test_head_width_key_sets_the_module(tiny_model_path, width, head_dim):
    from embedkit.models.loading import load_encoder
    from embedkit.training.run import apply_pooling

    model = load_encoder(tiny_model_path, device="cpu")
    apply_pooling(model, {"name": "latent_attention", "num_latents": 4, "num_heads": 2, "mlp_ratio": 4,
                          "head_width": width})
    assert (model[1].num_heads, model[1].head_dim) == (2, head_dim)
    assert tuple(model[1].to_q.weight.shape) == (2 * head_dim, 32)
