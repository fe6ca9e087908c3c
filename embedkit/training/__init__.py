"""Training text embedding models from YAML recipes: SimCSE, ESimCSE, G-SimCLR batching.

Layout: :mod:`~embedkit.training.recipe` (schema, loading, validation), :mod:`~embedkit.training.run`
(running a recipe), :mod:`~embedkit.training.registry` (loss and sampler builders by name),
:mod:`~embedkit.training.trainer` (the trainer with atomic checkpoints), ``losses/``,
:mod:`~embedkit.training.samplers`, :mod:`~embedkit.training.augment`.

Importing this package loads neither torch nor sentence-transformers.
"""

from __future__ import annotations

from embedkit.errors import RecipeError
from embedkit.training.recipe import Recipe, load_recipe, resolve_path, validate_recipe
from embedkit.training.registry import LOSSES, SAMPLERS, register_loss, register_sampler
from embedkit.training.run import TrainResult, read_sentences, train_recipe

__all__ = ["LOSSES", "SAMPLERS", "Recipe", "RecipeError", "TrainResult", "load_recipe", "read_sentences",
           "register_loss", "register_sampler", "resolve_path", "train_recipe", "validate_recipe"]
