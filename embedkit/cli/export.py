"""``embedkit export``: a standalone sub-model folder (first L layers, first D dims)."""

from __future__ import annotations

import click

from embedkit.cli._common import POSITIVE, check_model, command, json_option, out_option, print_json


@command()
@click.argument("model")
@click.option("--layers", type=POSITIVE, default=None, help="Transformer layers to keep [all].")
@click.option("--dim", type=POSITIVE, default=None, help="Embedding dimensions to keep (renormalised) [all].")
@out_option(help="Folder to write; plain SentenceTransformer(folder) loads it.")
@click.option("--device", default=None, metavar="DEV", help="torch device used while exporting [cpu].")
@json_option
def export(model, layers, dim, out, overwrite, device, as_json):
    """Write the (layers, dims) sub-model of a Matryoshka / Starbucks model as a plain sentence-transformers folder.

    Any sentence-transformers model can be cut; one trained with a Matryoshka / Starbucks recipe
    (docs/training.md) keeps its quality at the sizes it was trained for.

    \b
    Example:
      embedkit export default --layers 3 --dim 128 --out minilm-3x128
      embedkit export runs/starbucks --layers 2 --dim 64 --out starbucks-2x64   # a recipe's output folder
    """
    from embedkit.cli._common import prepare_output
    from embedkit.models.export import export_submodel

    check_model(model, layers=layers, dim=dim)  # sizes against the model's config: before its weights load
    prepare_output(out, "model", overwrite=overwrite, inputs=[model])
    path = export_submodel(model, out, layers=layers, dim=dim, overwrite=overwrite, device=device or "cpu")
    if as_json:
        import json

        print_json(json.loads((path / "embedkit_submodel.json").read_text()))
    else:
        click.echo(str(path))
