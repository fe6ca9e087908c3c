"""Resume after kill -9 reaches the same weights as an uninterrupted run (tiny model, ESimCSE)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch

from embedkit.training import train_recipe, validate_recipe
from embedkit.training.trainer import MARKER, latest_checkpoint


def _weights(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu").state_dict()


def test_kill9_then_resume_matches_uninterrupted(recipe_dict, tmp_path):
    d = recipe_dict("esimcse", max_steps=8, checkpoint_every=2)
    d["eval"]["select_best"] = False  # compare the last weights, not a selected checkpoint
    full = validate_recipe({**d, "output": str(tmp_path / "full")})
    res_full = train_recipe(full, show_progress=False)
    assert res_full.global_step == 8

    killed = {**d, "output": str(tmp_path / "killed")}
    (tmp_path / "r.json").write_text(json.dumps(killed))
    script = textwrap.dedent(f"""
        import json, os, signal
        from transformers import TrainerCallback
        from embedkit.training import train_recipe, validate_recipe
        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 5:  # checkpoint-4 is complete, step 5 is lost
                    os.kill(os.getpid(), signal.SIGKILL)
        r = validate_recipe(json.load(open({str(tmp_path / 'r.json')!r})))
        train_recipe(r, show_progress=False, callbacks=[Kill()])
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == -9, p.stderr[-2000:]
    recipe = validate_recipe(killed)
    assert not recipe.output.exists()
    last = latest_checkpoint(recipe.checkpoint_dir)
    assert last is not None and last.name == "checkpoint-4"
    assert (last / "esimcse_state.safetensors").is_file()
    # a half-written newer checkpoint (no marker) must be ignored
    partial = recipe.checkpoint_dir / "checkpoint-6"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert latest_checkpoint(recipe.checkpoint_dir) == last

    res = train_recipe(recipe, resume=True, show_progress=False)
    assert res.resumed_from == str(last) and res.global_step == 8
    assert (recipe.checkpoint_dir / "checkpoint-6" / MARKER).is_file()  # rewritten completely
    a, b = _weights(full.output), _weights(recipe.output)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # the uninterrupted run actually moved the weights
    base = _weights(d["model"])
    assert any(not torch.allclose(a[k], base[k]) for k in a if k in base)


def test_existing_checkpoints_need_resume(recipe_dict, tmp_path):
    from embedkit.errors import RecipeError

    r = validate_recipe(recipe_dict("simcse", max_steps=2, checkpoint_every=2))
    train_recipe(r, show_progress=False)
    import pytest

    with pytest.raises(RecipeError, match="--resume"):
        train_recipe(r, show_progress=False)
