"""Checkpoint retention by a validation metric, and damaged checkpoint files."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_text_recipe, write_recipe

from modal_core.checkpoints import store
from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.errors import CheckpointError, RecipeError
from modal_core.training.run import train


def _train(tmp_path, plugins, **trainer):
    recipe = tiny_text_recipe(
        tmp_path / "run",
        data={"val_samples": 16},
        trainer={"max_steps": 8, "val_every_n_steps": 2, "keep_last": 1, **trainer},
    )
    return train(load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe), [], plugins), plugins)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_keep_best_keeps_the_best_scored_checkpoints_besides_the_newest(tmp_path, plugins, mode):
    # "max" of the validation loss prefers the early, worse checkpoints: the kept set
    # then differs from what recency alone would keep.
    result = _train(tmp_path, plugins, keep_best=2, monitor_mode=mode)
    val_losses = {r["step"]: r["val/loss"] for r in read_history(result.history) if "val/loss" in r}
    assert sorted(val_losses) == [2, 4, 6, 8]
    ranked = sorted(val_losses, key=val_losses.get, reverse=mode == "max")
    folder = result.run_dir / "checkpoints"
    expected = {f"step-{s:06d}" for s in [*ranked[:2], 8]}
    assert {p.name for p in folder.glob("step-*")} == expected
    assert (folder / "best").resolve().name == f"step-{ranked[0]:06d}"
    assert (folder / "last").resolve().name == "step-000008"
    store.verify(folder / "best")  # a complete checkpoint that generate/understand accept


def test_keep_best_without_validation_is_a_recipe_error(tmp_path, plugins):
    recipe = tiny_text_recipe(tmp_path / "run", trainer={"keep_best": 1})
    with pytest.raises(RecipeError, match="data.val_samples"):
        train(load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe), [], plugins), plugins)


def test_unknown_monitor_names_what_validation_logged(tmp_path, plugins):
    with pytest.raises(RecipeError, match="val/loss"):
        _train(tmp_path, plugins, keep_best=1, monitor="val/accuracy", max_steps=2)


def test_a_damaged_weights_file_of_the_right_size_is_a_clear_error(tmp_path):
    target = tmp_path / "ckpt"
    store.write_atomically(target, lambda d: store.save_model_state({"w": torch.ones(3)}, d))
    with (target / "model.safetensors").open("r+b") as handle:
        handle.write(b"\xff" * 8)  # the header length: garbage, same file size
    with pytest.raises(CheckpointError, match="model.safetensors is damaged: its content differs"):
        store.load_model_state(target)
    with pytest.raises(CheckpointError, match="damaged or not a safetensors file"):  # sizes only: safetensors says why
        store.load_model_state(target, verify_content=False)
