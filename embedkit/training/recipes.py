"""Compatibility module: the recipe schema moved to :mod:`embedkit.training.recipe`, running a recipe to
:mod:`embedkit.training.run`, and the loss/sampler tables to :mod:`embedkit.training.registry`.

Every name this module used to define is re-exported here; new code imports from
:mod:`embedkit.training` (or the modules above).
"""

from __future__ import annotations

from embedkit.errors import RecipeError
from embedkit.training.recipe import SCHEMA, Recipe, load_recipe, resolve_path, validate_recipe
from embedkit.training.registry import LOSSES, SAMPLERS, build_loss
from embedkit.training.run import TrainResult, read_sentences, train_recipe

__all__ = ["LOSSES", "SAMPLERS", "SCHEMA", "Recipe", "RecipeError", "TrainResult", "build_loss", "load_recipe",
           "read_sentences", "resolve_path", "train_recipe", "validate_recipe"]
