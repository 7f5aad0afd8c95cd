"""Janus stage 3 on the data formats labs have: the shipped recipe's sources (LLaVA-format
conversations, text conversations, text-to-image WebDataset shards), packed, learn."""

from __future__ import annotations

from conftest import tiny_image_recipe, write_recipe

from images.janus.sft_data import SHARD_PATTERNS, write_sft_data
from modal_core import recipes
from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe, recipe_to_dict
from modal_core.training.run import train

STEPS = 12


def _tiny_files(sources: list[dict], data) -> list[dict]:
    """The recipe's sources, each reading the tiny file of its format."""
    files = {"image_conversations": "sft_conversations.json", **SHARD_PATTERNS}
    tiny = []
    for source in sources:
        options = {key: value for key, value in source["options"].items() if key != "image_root"}
        name = files[source["dataset"]]
        if source["dataset"] == "image_conversations" and str(options["path"]).endswith(".jsonl"):
            name = "sft_text_conversations.jsonl"
        tiny.append({**source, "options": {**options, "path": str(data / name)}})
    return tiny


def test_stage3_sources_train_together_packed_and_the_loss_falls(tmp_path, image_plugins):
    shipped = load_recipe(recipes.find("janus/stage3"))
    data = write_sft_data(tmp_path / "data")
    recipe = tiny_image_recipe(tmp_path / "run")
    recipe["data"] = {
        **recipe["data"],
        "sources": _tiny_files(recipe_to_dict(shipped.data.sources), data),
        "packing": shipped.data.packing,
        "max_length": 160,
    }
    recipe["trainer"] = {**recipe["trainer"], "max_steps": STEPS}
    recipe["optim"] = {**recipe["optim"], "lr": 1e-2}
    assert {source["dataset"] for source in recipe["data"]["sources"]} == {"image_conversations", "webdataset_image_text"}
    result = train(load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe), plugins=image_plugins), image_plugins)
    history = [record for record in read_history(result.history) if "train/loss" in record]
    assert len(history) == STEPS and all(record["train/padding_fraction"] < 0.5 for record in history)
    assert any("train/loss_vq_generation" in record for record in history)  # the shards' images were drawn
    losses = [record["train/loss"] for record in history]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (first, last, losses)
