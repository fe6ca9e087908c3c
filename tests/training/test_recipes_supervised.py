"""Supervised data in recipes, Matryoshka / 2D / Starbucks wrappers, pooling, own-negatives loss, stages."""

from __future__ import annotations

import random

import pytest
import torch

from embedkit.errors import DataFormatError, RecipeError
from embedkit.training import validate_recipe
from embedkit.training.run import train_recipe


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    from embedkit.testing import WORDS

    d = tmp_path_factory.mktemp("pairs")
    rng = random.Random(1)

    def sent(n=6):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    (d / "pairs.tsv").write_text("anchor\tpositive\tnegative\n" + "".join(
        f"{sent()}\t{sent()}\t{sent()}\n" for _ in range(64)))
    (d / "scored.tsv").write_text("score\tsentence1\tsentence2\n" + "".join(
        f"{rng.uniform(0, 5):.2f}\t{sent()}\t{sent()}\n" for _ in range(64)))
    (d / "bad.tsv").write_text("anchor\tpositive\na b\tc d\nonly one column\n")
    return d


def _recipe(recipe_dict, pair_files, **over):
    r = recipe_dict("mnrl")
    r["data"] = {"train": str(pair_files / "pairs.tsv"), "format": "pairs"}
    r["training"].update(max_steps=2, checkpoint_every=2, batch_size=8)
    r["eval"] = {"sets": []}
    for k, v in over.items():
        r[k] = v
    return r


def test_pairs_with_negatives_train_and_save(recipe_dict, pair_files):
    from sentence_transformers import SentenceTransformer

    rec = validate_recipe(_recipe(recipe_dict, pair_files), "r.yaml")
    res = train_recipe(rec, show_progress=False)
    assert res.global_step == 2
    assert SentenceTransformer(str(rec.output), device="cpu").encode(["a cat"]).shape[1] == 32


def test_malformed_pairs_file_names_file_and_line(recipe_dict, pair_files, monkeypatch):
    import embedkit.models.loading as loading

    monkeypatch.setattr(loading, "load_encoder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    r = _recipe(recipe_dict, pair_files)
    r["data"]["train"] = str(pair_files / "bad.tsv")
    with pytest.raises(DataFormatError, match=r"bad.tsv:3: 1 tab-separated field"):
        train_recipe(validate_recipe(r, "r.yaml"), show_progress=False)


@pytest.mark.parametrize("mutate, key, words", [
    (lambda r: r["loss"].update(starbucks={"ladder": [[1, 8], [3, 32]]}), "loss.starbucks.ladder", "beyond the model's depth 2"),
    (lambda r: r["loss"].update(starbucks={"ladder": [[1, 16], [2, 16]]}), "loss.starbucks.ladder", "must increase"),
    (lambda r: r["loss"].update(starbucks={"ladder": [[1, 16], [2, 64]]}), "loss.starbucks.ladder", "width 32"),
    (lambda r: r["loss"].update(matryoshka={"dims": [64, 16]}), "loss.matryoshka.dims", "width 32"),
    (lambda r: r["loss"].update(matryoshka={"dims": [16]}, starbucks={}), "loss.starbucks", "only one of"),
    (lambda r: r["loss"].update(name="simcse"), "loss.name", "trains on data.format sentences, not pairs"),
    (lambda r: r["loss"].update(in_batch_negatives=False, name="cosent"), "loss.name", "scored_pairs"),
    (lambda r: r.update(pooling={"name": "latent_attention", "num_heads": 5, "head_width": "split"}), "pooling.num_heads",
     "does not divide"),
    (lambda r: r.update(stages=[{"data": {"format": "pairs"}, "learning": 1}]), "stages[0].learning", "unknown key"),
])
def test_bad_supervised_recipes_name_the_key(recipe_dict, pair_files, mutate, key, words):
    r = _recipe(recipe_dict, pair_files)
    mutate(r)
    with pytest.raises(RecipeError) as e:
        rec = validate_recipe(r, "bad.yaml")
        rec.stage_recipes()
    assert str(e.value).startswith(f"bad.yaml: {key}") and words in str(e.value), str(e.value)


@pytest.mark.parametrize("wrapper, cls", [
    ({"matryoshka": {"dims": [32, 16, 8]}}, "MatryoshkaLoss"),
    ({"matryoshka2d": {"dims": [32, 16, 8]}}, "Matryoshka2dLoss"),
    ({"starbucks": {"ladder": [[1, 16], [2, 32]]}}, "StarbucksLoss"),
])
def test_wrappers_build_and_train(recipe_dict, pair_files, wrapper, cls, monkeypatch):
    import embedkit.training.registry as reg

    seen = []
    real = reg.wrap_loss

    def spy(model, loss, cfg):
        out = real(model, loss, cfg)
        seen.append(type(out).__name__)
        return out

    monkeypatch.setattr(reg, "wrap_loss", spy)
    r = _recipe(recipe_dict, pair_files)
    r["loss"].update(wrapper)
    train_recipe(validate_recipe(r, "r.yaml"), show_progress=False)
    assert seen == [cls]


def test_scored_pairs_with_cosent(recipe_dict, pair_files):
    r = _recipe(recipe_dict, pair_files)
    r["data"] = {"train": str(pair_files / "scored.tsv"), "format": "scored_pairs"}
    r["loss"] = {"name": "cosent"}
    assert train_recipe(validate_recipe(r, "r.yaml"), show_progress=False).global_step == 2


def test_own_negatives_loss_uses_no_in_batch_negatives(tiny_model_path):
    """Row i's loss must not depend on any other row: the gradient of row 0's loss w.r.t. the other rows'
    embeddings is exactly zero (an in-batch-negatives loss would give them gradient)."""
    from embedkit.models.loading import load_encoder
    from embedkit.training.losses.hard_negatives import OwnNegativesLoss

    loss = OwnNegativesLoss(load_encoder(tiny_model_path, device="cpu"))
    embs = [torch.randn(4, 32, requires_grad=True) for _ in range(3)]  # anchor, positive, negative
    z = loss.logits(embs)
    assert z.shape == (4, 2)  # own positive + own negative only
    torch.nn.functional.cross_entropy(z[:1], torch.zeros(1, dtype=torch.long)).backward()
    for e in embs:
        assert e.grad[1:].abs().sum() == 0 and e.grad[0].abs().sum() > 0


def test_two_stages_with_latent_pooling_and_extra_data(recipe_dict, pair_files, tmp_path):
    from embedkit.models.loading import load_encoder

    r = _recipe(recipe_dict, pair_files, pooling={"name": "latent_attention", "num_latents": 4, "num_heads": 2})
    r["stages"] = [
        {"training": {"max_steps": 2}},
        {"data": {"extra": [{"train": str(pair_files / "scored.tsv"), "format": "scored_pairs",
                             "loss": {"name": "cosent"}}]}, "training": {"max_steps": 2, "learning_rate": 1e-4}},
    ]
    rec = validate_recipe(r, "r.yaml")
    stages = rec.stage_recipes()
    assert [s.output.name for s in stages] == [rec.output.name + ".stage1", rec.output.name]
    train_recipe(rec, show_progress=False)
    model = load_encoder(rec.output, device="cpu")
    assert type(model[1]).__name__ == "LatentAttentionPooling"
    # resuming a finished two-stage run skips both stages
    assert train_recipe(rec, resume=True, show_progress=False) is None


def test_instruction_prompt_is_excluded_from_the_pool(recipe_dict, pair_files, tiny_model_path):
    """A query instruction is prepended at train time and its tokens are left out of latent-attention pooling;
    at encode time `prompt=` does the same, so the pooled vector equals pooling the text tokens alone."""
    import numpy as np

    from embedkit.models.loading import load_encoder

    r = _recipe(recipe_dict, pair_files, pooling={"name": "latent_attention", "num_latents": 4, "num_heads": 2})
    r["training"]["prompts"] = {"anchor": "Instruct: find the cat\nQuery: "}
    rec = validate_recipe(r, "r.yaml")
    train_recipe(rec, show_progress=False)
    model = load_encoder(rec.output, device="cpu")
    pool = model[1]
    assert type(pool).__name__ == "LatentAttentionPooling" and pool.include_prompt is False
    with_prompt = model.encode(["the cat"], prompt="find the cat ")
    pool.include_prompt = True
    counted = model.encode(["the cat"], prompt="find the cat ")
    assert not np.allclose(with_prompt, counted, atol=1e-6)  # the instruction tokens really were left out


def test_bad_prompts_key(recipe_dict, pair_files):
    r = _recipe(recipe_dict, pair_files)
    r["training"]["prompts"] = {"anchor": 3}
    with pytest.raises(RecipeError, match="training.prompts: must map column names to instruction strings"):
        validate_recipe(r, "bad.yaml")
