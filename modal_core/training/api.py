"""`modal_core.train`: a run from Python, the same one `modal-core train` starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from modal_core import recipes
from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError
from modal_core.plugins import PluginManager, get_plugin_manager
from modal_core.training import run
from modal_core.training.run import TrainResult


def train(recipe: str | Path | DictConfig, overrides: Sequence[str] | None = None, plugins: PluginManager | None = None) -> TrainResult:
    """Train as the recipe says; returns the run directory, final checkpoint and history.

    Args:
        recipe: a recipe file, a shipped recipe's name (`"quickstart/text"`, see
            `modal-core recipes`), or a recipe already loaded with `load_recipe`.
        overrides: `key=value` strings applied on top of a recipe file or name, as on
            the command line (`["output_dir=runs/mine", "trainer.max_steps=50"]`).
        plugins: the plugins to train with (default: the installed ones).

    Example:
        ```python
        import modal_core

        result = modal_core.train("quickstart/text", ["output_dir=runs/my-text", "trainer.max_steps=50"])
        print(result.checkpoint)
        ```
    """
    if overrides is not None and not (isinstance(overrides, (list, tuple)) and all(isinstance(item, str) for item in overrides)):
        raise RecipeError(f"train(overrides=...): expected a list of 'key=value' strings, got {overrides!r}")
    plugins = get_plugin_manager() if plugins is None else plugins
    if isinstance(recipe, DictConfig):
        if overrides:
            raise RecipeError("train(overrides=...): the recipe is already loaded; pass the overrides to load_recipe(path, overrides)")
        return run.train(recipe, plugins)
    return run.train(load_recipe(recipes.find(recipe), list(overrides or []), plugins), plugins)
