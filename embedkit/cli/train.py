"""``embedkit train CONFIG.yaml``: run a training recipe (see :mod:`embedkit.training.recipes`)."""

from __future__ import annotations

import click

from embedkit.cli._common import info


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--max-steps", type=int, default=None, metavar="N", help="Override training.max_steps.")
@click.option("--output", "-o", default=None, metavar="DIR", help="Override the recipe's output folder.")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint (e.g. after a crash).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(config, max_steps, output, resume, quiet):
    """Train an embedding model from a YAML recipe (SimCSE, ESimCSE, G-SimCLR batching).

    The recipe is validated before anything is loaded. The output folder is a
    sentence-transformers model (loadable by SentenceTransformer(path) and embedkit.load_encoder);
    checkpoints go to <output>.checkpoints and --resume continues from the newest complete one.

    \b
    Example:
      embedkit train configs/esimcse.yaml --max-steps 250 --output runs/esimcse
      embedkit train configs/esimcse.yaml --output runs/esimcse --resume   # after an interruption
    """
    from embedkit.training.recipes import load_recipe, train_recipe

    recipe = load_recipe(config).with_overrides(max_steps=max_steps, output=output)
    c = recipe.config
    info(f"recipe {recipe.source}: loss {c['loss']['name']}, sampler {c['sampler']['name']}, "
         f"batch {c['training']['batch_size']}, max_steps {c['training']['max_steps'] or 'epochs=' + str(c['training']['epochs'])}")
    res = train_recipe(recipe, resume=resume, progress=not quiet, log=info)
    click.echo(f"trained {res.output}: {res.global_step} steps, {res.steps_per_second:.2f} steps/s"
               + (f", best STS dev Spearman {res.best_metric:.2f}" if res.best_metric is not None else "")
               + (f", G-SimCLR batches without repeated cluster {res.sampler_stats['no_repeat_fraction']:.0%}"
                  if res.sampler_stats else ""))
