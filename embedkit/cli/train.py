"""``embedkit train CONFIG.yaml``: run a training recipe (see :mod:`embedkit.training`)."""

from __future__ import annotations

import click

from embedkit.cli._common import POSITIVE, check_input, command, json_option, option, print_json, show_progress


@command()
@click.argument("config")
@click.option("--max-steps", type=POSITIVE, default=None, metavar="N", help="Override training.max_steps.")
@option("--out", "-o", "out", aliases=("--output",), default=None, metavar="DIR",
        help="Override the recipe's output folder (a new or empty folder, or --overwrite an earlier model).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier embedkit model at the output folder.")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint (e.g. after a crash).")
@click.option("--nproc", type=POSITIVE, default=None, metavar="N",
              help="Train with N processes on this machine (torchrun; gloo on CPU, NCCL on GPUs).")
@json_option
def train(config, max_steps, out, overwrite, resume, nproc, as_json):
    """Train an embedding model from a YAML recipe (SimCSE, ESimCSE, G-SimCLR, supervised pairs, Matryoshka /
    2DMSE / Starbucks, latent-attention pooling, multi-stage).

    The recipe and the output folder are validated before anything is loaded. The output folder is a
    sentence-transformers model (loadable by SentenceTransformer(path) and embedkit.load_encoder);
    checkpoints go to <output>.checkpoints and --resume continues from the newest complete one.

    \b
    Example:
      embedkit train configs/esimcse.yaml --max-steps 250 --out runs/esimcse
      embedkit train configs/esimcse.yaml --out runs/esimcse --resume   # after an interruption
      embedkit train configs/esimcse.yaml --nproc 2                      # two processes (DDP)
    """
    from pathlib import Path

    from embedkit.errors import EmbedkitError
    from embedkit.training import load_recipe, train_recipe

    if Path(config).expanduser().is_dir():
        raise EmbedkitError(f"{config}: is a folder; name a recipe file (YAML)")
    try:
        check_input(config, "CONFIG", kind="file")
    except EmbedkitError:
        raise EmbedkitError(f"{config}: recipe file not found") from None
    recipe = load_recipe(config).with_overrides(max_steps=max_steps, output=out)
    # the recipe's summary is logged by train_recipe once its cheap checks passed (bad input: one line)
    import os

    if nproc and nproc > 1 and "LOCAL_RANK" not in os.environ:
        from embedkit.training.distributed import launch

        launch(config, nproc, [*(["--max-steps", str(max_steps)] if max_steps else []), *(["--out", out] if out else []),
                               *(["--overwrite"] if overwrite else []), *(["--resume"] if resume else []),
                               *(["--json"] if as_json else [])])
        return
    res = train_recipe(recipe, resume=resume, overwrite=overwrite, show_progress=show_progress())
    from embedkit.training.distributed import is_main_process

    if not is_main_process() or res is None:
        return
    if as_json:
        print_json({"out": str(res.output), "steps": res.global_step, "steps_per_second": res.steps_per_second,
                    "best_metric": res.best_metric, "sampler_stats": res.sampler_stats})
        return
    click.echo(f"trained {res.output}: {res.global_step} steps, {res.steps_per_second:.2f} steps/s"
               + (f", best STS dev Spearman {res.best_metric:.2f}" if res.best_metric is not None else "")
               + (f", G-SimCLR batches without repeated cluster {res.sampler_stats['no_repeat_fraction']:.0%}"
                  if res.sampler_stats else ""))
