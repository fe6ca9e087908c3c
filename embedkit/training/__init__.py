"""Training text embedding models from YAML recipes: unsupervised (SimCSE, ESimCSE, G-SimCLR batching),
supervised pairs and retrieval pairs with mined hard negatives, Matryoshka / 2DMSE / Starbucks (one
model, many layer x dim sizes, with SMAE pre-training), NV-Embed latent-attention pooling and
multi-stage recipes; one or several processes (torchrun).

Layout: :mod:`~embedkit.training.recipe` (schema, loading, validation), :mod:`~embedkit.training.recipes`
(the shipped recipe names), :mod:`~embedkit.training.run` (running a recipe and its stages),
:mod:`~embedkit.training.registry` (loss and sampler builders by name), :mod:`~embedkit.training.trainer`
(the trainer with atomic checkpoints), ``losses/`` (one file per loss), :mod:`~embedkit.training.samplers`,
:mod:`~embedkit.training.augment`, :mod:`~embedkit.training.mining` (TopK-PercPos hard negatives),
:mod:`~embedkit.training.smae`, :mod:`~embedkit.training.distributed` (torchrun).

Importing this package loads neither torch nor sentence-transformers.
"""

from __future__ import annotations

from embedkit.errors import RecipeError
from embedkit.training.recipe import Recipe, load_recipe, resolve_path, validate_recipe
from embedkit.training.registry import LOSSES, SAMPLERS, register_loss, register_sampler
from embedkit.training.run import TrainResult, read_sentences, train_recipe

__all__ = ["LOSSES", "SAMPLERS", "Recipe", "RecipeError", "TrainResult", "load_recipe", "read_sentences",
           "register_loss", "register_sampler", "resolve_path", "train_recipe", "validate_recipe"]
