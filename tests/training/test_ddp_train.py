"""Two-process training runs under torchrun (gloo, tiny model): kill -9 + resume, a dead worker's error.

The workers run :class:`~embedkit.training.trainer.EmbedkitTrainer` the way ``train_recipe`` does
(the script below), launched with :func:`embedkit.training.distributed.launch_workers`.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest
import torch

from embedkit.errors import DistributedError
from embedkit.training.distributed import launch_workers

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    import torch
    from transformers import TrainerCallback
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainingArguments
    from embedkit.models.loading import load_encoder
    from embedkit.training import distributed, validate_recipe
    from embedkit.training.run import read_sentences
    from embedkit.training.registry import build_loss, build_sampler
    from embedkit.training.trainer import EmbedkitTrainer, StsEvaluator, latest_checkpoint

    cfg = json.load(open(sys.argv[1]))
    torch.set_num_threads(1)
    recipe = validate_recipe(cfg["recipe"])
    c, t = recipe.config, recipe.config["training"]
    texts = read_sentences(recipe)
    torch.manual_seed(t["seed"])
    model = load_encoder(c["model"])
    model.max_seq_length = t["max_seq_length"]
    loss = build_loss(c["loss"]["name"], model, c["loss"])
    plan = build_sampler(c["sampler"]["name"], texts, model, c)

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == cfg.get("kill_step") and distributed.rank() == cfg.get("kill_rank"):
                with open(cfg["kill_time"], "w") as f:
                    f.write(str(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(recipe.checkpoint_dir), use_cpu=True, seed=t["seed"], data_seed=t["seed"],
        per_device_train_batch_size=t["batch_size"], learning_rate=t["learning_rate"], max_steps=t["max_steps"],
        eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=t["checkpoint_every"],
        logging_steps=t["logging_steps"], report_to="none", disable_tqdm=True, dataloader_drop_last=True,
        batch_sampler=plan.batch_sampler, ddp_timeout=cfg.get("timeout", 60))
    trainer = EmbedkitTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}), loss=loss,
                              evaluator=StsEvaluator(recipe.eval_paths), keep_checkpoints=None, callbacks=[Kill()])
    resume = latest_checkpoint(recipe.checkpoint_dir) if cfg.get("resume") else None
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if distributed.is_main_process():
        model.save(str(recipe.output))
        with open(os.path.join(str(recipe.output), "evals.json"), "w") as f:
            json.dump([h for h in trainer.state.log_history if "eval_sts-dev_spearman" in h], f)
""")


def _launch(tmp_path, name, recipe, **extra):
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    cfg = tmp_path / f"{name}.json"
    cfg.write_text(json.dumps({"recipe": recipe, **extra}))
    launch_workers([sys.executable, str(script), str(cfg)], 2, env={"OMP_NUM_THREADS": "1"})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tiny_model_path, tiny_corpus, tmp_path_factory):
    """An uninterrupted 2-process ESimCSE run, and the same run with rank 1 killed (-9) at step 5."""
    tmp_path = tmp_path_factory.mktemp("ddp_train")
    d = {"model": tiny_model_path, "data": {"train": tiny_corpus["train"]}, "loss": {"name": "esimcse"},
         "sampler": {"name": "random"}, "eval": {"sets": [tiny_corpus["dev"]], "select_best": False},
         "training": {"batch_size": 8, "max_steps": 8, "checkpoint_every": 2, "max_seq_length": 16, "seed": 7,
                      "learning_rate": 1.0e-3, "logging_steps": 2}}
    full = {**d, "output": str(tmp_path / "full")}
    _launch(tmp_path, "full", full)
    killed = {**d, "output": str(tmp_path / "killed")}
    kill_time = tmp_path / "kill_time"
    err = None
    try:
        _launch(tmp_path, "killed", killed, kill_step=5, kill_rank=1, kill_time=str(kill_time), timeout=60)
    except DistributedError as e:
        err = e
    waited = time.time() - float(kill_time.read_text()) if kill_time.is_file() else None
    return {"dir": tmp_path, "base": d["model"], "full": full, "killed": killed, "error": err, "waited": waited}


def test_a_killed_worker_ends_the_run_with_one_line_naming_its_rank(runs):
    assert runs["error"] is not None, "the run with a killed worker did not fail"
    msg = str(runs["error"])
    assert "\n" not in msg and "rank 1" in msg and "SIGKILL" in msg and "--resume" in msg, msg
    assert msg.startswith("training worker rank 1 ")
    assert runs["waited"] < 60  # within the collective timeout: no hang


def test_evaluation_runs_under_ddp(runs):
    evals = json.loads((runs["dir"] / "full" / "evals.json").read_text())
    assert [e["step"] for e in evals] == [4, 8]  # evaluated on rank 0, metrics in the log
    assert all(-100 <= e["eval_sts-dev_spearman"] <= 100 for e in evals)


def test_kill9_then_resume_with_two_processes_matches_uninterrupted(runs):
    from pathlib import Path

    from embedkit.training import validate_recipe
    from embedkit.training.trainer import checkpoint_info, latest_checkpoint

    killed = runs["killed"]
    ckpt_dir = validate_recipe(killed).checkpoint_dir
    last = latest_checkpoint(ckpt_dir)
    assert last is not None and last.name == "checkpoint-4"
    info = checkpoint_info(last)
    assert (info["world_size"], info["per_device_batch_size"], info["global_batch_size"]) == (2, 8, 16)
    assert {p.name for p in last.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert (last / "esimcse_state.safetensors").is_file()

    _launch(runs["dir"], "resume", killed, resume=True)
    a, b = _weights(runs["dir"] / "full"), _weights(runs["dir"] / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    base = _weights(Path(runs["base"]))
    assert any(not torch.allclose(a[k], base[k]) for k in a if k in base)


def test_resume_with_another_process_count_needs_the_same_global_batch(tmp_path):
    from embedkit.training.trainer import MARKER, check_resume_compatible

    ck = tmp_path / "checkpoint-4"
    ck.mkdir()
    (ck / MARKER).write_text(json.dumps({"global_step": 4, "complete": True, "world_size": 2,
                                         "per_device_batch_size": 32, "global_batch_size": 64}))
    check_resume_compatible(ck, 2, 32)
    check_resume_compatible(ck, 1, 64)  # same global batch: allowed
    check_resume_compatible(ck, 4, 16)
    with pytest.raises(DistributedError, match=r"^checkpoint-4: written by 2 process\(es\) x batch 32 \(global batch 64\), "
                       r"this run has 1 x 32 \(global batch 32\); .*set training.batch_size to 64"):
        check_resume_compatible(ck, 1, 32)
    with pytest.raises(DistributedError, match="resume with --nproc 2"):
        check_resume_compatible(ck, 3, 32)
    (ck / MARKER).write_text(json.dumps({"global_step": 4, "complete": True}))  # an older checkpoint
    check_resume_compatible(ck, 2, 32)
