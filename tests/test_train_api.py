"""`modal_core.train`, the public way to train from Python: a recipe file, a shipped
recipe's name or a loaded recipe, with overrides as on the command line."""

from __future__ import annotations

import pytest
from conftest import tiny_text_recipe, write_recipe

import modal_core
from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError


def test_train_takes_a_recipe_file_with_overrides(tmp_path, plugins):
    path = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "unused"))
    result = modal_core.train(path, [f"output_dir={tmp_path / 'run'}", "trainer.max_steps=1"], plugins)
    assert isinstance(result, modal_core.TrainResult)
    assert result.run_dir == tmp_path / "run"
    assert result.checkpoint == (tmp_path / "run" / "checkpoints" / "step-000001").resolve()
    assert (result.checkpoint / "model.safetensors").is_file()


def test_train_takes_a_loaded_recipe_but_not_overrides_for_it(tmp_path, plugins):
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run", trainer={"max_steps": 1})))
    with pytest.raises(RecipeError, match=r"already loaded; pass the overrides to load_recipe"):
        modal_core.train(recipe, ["trainer.max_steps=2"], plugins)
    assert not (tmp_path / "run").exists()
    assert modal_core.train(recipe, plugins=plugins).checkpoint.name == "step-000001"


def test_train_says_what_overrides_must_be(tmp_path, plugins):
    path = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run"))
    for wrong in (plugins, "trainer.max_steps=1"):  # plugins passed where overrides go; one string, not a list
        with pytest.raises(RecipeError, match=r"train\(overrides=...\): expected a list of 'key=value' strings"):
            modal_core.train(path, wrong)
    assert not (tmp_path / "run").exists()


def test_train_finds_a_shipped_recipe_by_name_before_anything_runs(tmp_path, plugins):
    with pytest.raises(RecipeError, match="did you mean quickstart/text"):
        modal_core.train("quickstart/txt", [f"output_dir={tmp_path}"], plugins)
