"""Matryoshka, 2DMSE and Starbucks under DistributedDataParallel: two gloo processes, a tiny model.

sentence-transformers' trainer puts the DDP wrapper into ``loss.model``; StarbucksLoss used to index
it (``TypeError: 'DistributedDataParallel' object is not subscriptable``). One torchrun launch runs
``train_recipe`` with each wrapper for 2 steps (the work ``embedkit train --nproc 2`` gives each
worker); every rank records its final weights, which must agree across ranks (the gradients were
synchronised) and differ from the starting model (something was trained).
"""

from __future__ import annotations

import json
import random
import sys
import textwrap

import torch

from embedkit.training.distributed import launch_workers

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from transformers import TrainerCallback
    from embedkit.training import distributed, validate_recipe
    from embedkit.training.run import train_recipe

    cfg = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)

    class Record(TrainerCallback):
        def __init__(self, name):
            self.name = name

        def on_train_end(self, args, state, control, model=None, **kw):
            flat = torch.cat([p.detach().flatten() for p in model.parameters()])
            with open(os.path.join(cfg["dir"], f"{self.name}.rank{distributed.rank()}.json"), "w") as f:
                json.dump({"weights": flat[::7].tolist(), "step": state.global_step}, f)

    for name, recipe in cfg["recipes"].items():
        train_recipe(validate_recipe(recipe, name), show_progress=False, callbacks=[Record(name)])
""")


def test_matryoshka_2dmse_and_starbucks_train_under_two_processes(tiny_model_path, tmp_path):
    from embedkit.testing import WORDS

    rng = random.Random(0)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(6)) + "\t" +
                             " ".join(rng.choice(WORDS) for _ in range(6)) + "\n" for _ in range(64)))
    base = {"model": tiny_model_path, "data": {"train": str(pairs), "format": "pairs"},
            "training": {"batch_size": 4, "max_steps": 2, "max_seq_length": 16, "learning_rate": 1e-2,
                         "checkpoint_every": 100, "use_cpu": True, "seed": 3}, "eval": {"sets": []}}
    wrappers = {"matryoshka": {"dims": [32, 16, 8]}, "matryoshka2d": {"dims": [32, 16, 8]},
                "starbucks": {"ladder": [[1, 8], [2, 32]], "kl": "scores", "distil_weight": 0.5}}
    recipes = {w: {**base, "output": str(tmp_path / w), "loss": {"name": "mnrl", w: spec}} for w, spec in wrappers.items()}
    script, cfg = tmp_path / "worker.py", tmp_path / "cfg.json"
    script.write_text(SCRIPT)
    cfg.write_text(json.dumps({"recipes": recipes, "dir": str(tmp_path)}))
    launch_workers([sys.executable, str(script), str(cfg)], 2, env={"OMP_NUM_THREADS": "1"})

    from embedkit.models.loading import load_encoder

    start = torch.cat([p.detach().flatten() for p in load_encoder(tiny_model_path).parameters()])[::7]
    for w in wrappers:
        r0, r1 = (json.loads((tmp_path / f"{w}.rank{r}.json").read_text()) for r in (0, 1))
        assert r0["step"] == r1["step"] == 2, w
        w0, w1 = torch.tensor(r0["weights"]), torch.tensor(r1["weights"])
        assert torch.allclose(w0, w1, atol=1e-6), f"{w}: the ranks' weights differ (gradients not synchronised)"
        assert not torch.allclose(w0, start, atol=1e-4), f"{w}: nothing was trained"
        assert (tmp_path / w / "embedkit_sizes.json").is_file(), w  # rank 0 wrote the output
