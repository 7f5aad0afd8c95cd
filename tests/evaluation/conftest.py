"""Fixtures of the evaluation tests: a tiny image model trained for a few steps (once per
session) and a fake pipeline whose answers the tests choose."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_BACKBONE, tiny_text_recipe, with_image_plugins, write_recipe

from modal_core.config.loader import load_recipe
from modal_core.plugins import PluginManager
from modal_core.training.run import train

TINY_IMAGES = {
    "image_understanding": {"image_size": 32, "patch_size": 8, "width": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "vq_generation": {
        "architecture": "compact",
        "image_size": 32,
        "codebook_size": 64,
        "code_dim": 8,
        "base_channels": 32,
        "channel_multiplier": [1, 1, 1, 1],
        "num_res_blocks": 1,
        "latent_channels": 32,
    },
}


MODEL_GENERATION = {"cfg_schedule": "linear", "cfg_plausibility": 0.2}
"""The tiny model's own guidance (its recipe's `generation:` section): what a suite draws with unless told."""


def image_plugins() -> PluginManager:
    return with_image_plugins(PluginManager(load_entry_points=False))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A run directory of a tiny model that answers and draws (trained a few steps)."""
    root = tmp_path_factory.mktemp("tiny_model")
    shapes = {"image_size": 32, "grid": 8, "size": 200}
    recipe = tiny_text_recipe(
        root / "run",
        backbone={**TINY_BACKBONE, "config": {**TINY_BACKBONE["config"], "max_position_embeddings": 160}},
        modalities=TINY_IMAGES,
        train=["backbone", "adapters", "heads"],
        data={
            "sources": [
                {"dataset": "shapes", "weight": 1, "options": {"task": "vqa", **shapes}},
                {"dataset": "shapes", "weight": 1, "options": {"task": "generate", **shapes}},
            ],
            "batch_size": 4,
            "max_length": 64,
        },
        trainer={"max_steps": 3},
        generation=MODEL_GENERATION,
    )
    plugins = image_plugins()
    result = train(load_recipe(write_recipe(root / "tiny.yaml", recipe), plugins=plugins), plugins)
    return result.run_dir
