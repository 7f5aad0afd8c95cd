"""GRPO and DPO through the training loop on a tiny image model: a third-party reward
registered in-process through the `modal_core_rewards` hook, its mean rising; the KL to
the reference at step 0; rollout grids, the understanding guard, and DPO on a file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_image_recipe, write_recipe
from PIL import Image

from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError
from modal_core.hookspecs import hookimpl
from modal_core.training.run import train
from modal_core_images.processing import tensor_to_image


def likeness(options, context):
    """A third-party reward: how close an image is to the picture the model's decoder
    makes of all-zero codes (minus the mean absolute pixel difference, 0 at best)."""
    model = context.model
    generation = model.encoders["vq_generation"]
    with torch.no_grad():
        target = generation.decode(torch.zeros((1, options["positions"]), dtype=torch.long, device=context.device))[0]
    target = torch.as_tensor(np.asarray(tensor_to_image(target.cpu()), dtype=np.float32))

    def reward(prompts, images, metadata):
        return [-float((torch.as_tensor(np.asarray(image, dtype=np.float32)) - target).abs().mean()) for image in images]

    return reward


class LikenessPlugin:
    """A third-party plugin contributing one reward."""

    @hookimpl
    def modal_core_rewards(self):
        return {"likeness": likeness}


@pytest.fixture
def reward_plugins(image_plugins):
    image_plugins.register(LikenessPlugin(), name="likeness")
    yield image_plugins
    image_plugins.unregister("likeness")


def grpo_recipe(tmp_path, sft_sources=(), **preference) -> dict:
    recipe = tiny_image_recipe(tmp_path / "run")
    # 16 px pictures of 2 x 2 codes from a codebook of 8: few enough choices for a few rollouts to learn from.
    recipe["modalities"]["vq_generation"] = {**recipe["modalities"]["vq_generation"], "codebook_size": 8, "image_size": 16}
    recipe["data"] = {
        "sources": [
            {"dataset": "shapes", "options": {"task": "generate", "image_size": 32, "size": 64}},
            *sft_sources,
        ],
        "batch_size": 4,
        "max_length": 64,
    }
    recipe["optim"] = {"lr": 1e-2}
    recipe["trainer"] = {**recipe["trainer"], "max_steps": 24, "gradient_clip_val": None}
    recipe["preference"] = {
        "method": "grpo",
        "rewards": [{"name": "likeness", "options": {"positions": 4}}],
        "group_size": 8,
        "cfg_scale": 1.0,
        "kl_weight": 0.01,
        "sample_every_n_steps": 12,
        **preference,
    }
    return recipe


def test_the_hook_lists_third_party_and_builtin_rewards(reward_plugins):
    assert {"likeness", "shapes_checker", "understanding_self_reward", "clip_score"} <= set(reward_plugins.rewards())
    info = {entry.name: entry for entry in reward_plugins.describe()}
    assert info["likeness"].rewards == ["likeness"]


@pytest.mark.slow
def test_grpo_raises_a_third_party_reward_through_the_training_loop(tmp_path, reward_plugins):
    recipe = load_recipe(write_recipe(tmp_path / "grpo.yaml", grpo_recipe(tmp_path, updates_per_rollout=2)), plugins=reward_plugins)
    result = train(recipe, reward_plugins)
    history = [record for record in read_history(result.history) if "train/reward_mean" in record]
    assert len(history) == 24
    assert history[0]["train/kl"] == 0.0  # the policy is the reference at step 0
    rewards = [record["train/reward_mean"] for record in history]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 3.0, rewards  # pixel units: a clear move towards the target picture
    grids = sorted((result.run_dir / "rollouts").glob("*.png"))
    assert [g.name for g in grids] == ["step-000000.png", "step-000012.png"]
    with Image.open(grids[0]) as grid:
        assert grid.width >= 8 * 16


def test_preference_tuning_on_several_processes_is_refused_before_any_starts(tmp_path, reward_plugins):
    recipe = grpo_recipe(tmp_path)
    recipe["trainer"] = {**recipe["trainer"], "accelerator": "cpu", "devices": 2, "strategy": "ddp"}
    recipe = load_recipe(write_recipe(tmp_path / "grpo.yaml", recipe), plugins=reward_plugins)
    with pytest.raises(RecipeError, match=r"preference tuning runs in one process; this recipe asks for 2 "):
        train(recipe, reward_plugins)
    assert list((tmp_path / "run").iterdir()) == []  # no run left behind: the same folder takes the next one


class FallingSuitePlugin:
    """A suite whose accuracy drops by 0.1 at each evaluation (the guard's start is the first)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def modal_core_evaluators(self):
        def evaluate(pipeline, options, out_dir):
            assert pipeline.answer("is there a red circle?", image=Image.new("RGB", (32, 32))) is not None
            self.calls += 1
            return {"accuracy": 1.0 - 0.1 * (self.calls - 1)}

        return {"falling": evaluate}


def test_the_guard_stops_the_run_when_understanding_drops_beyond_the_margin(tmp_path, reward_plugins):
    reward_plugins.register(FallingSuitePlugin(), name="falling")
    guard = {"suite": "falling", "every_n_steps": 2, "margin": 0.15, "action": "stop"}
    recipe = grpo_recipe(tmp_path, guard=guard, group_size=2)
    recipe["trainer"]["max_steps"] = 10
    result = train(load_recipe(write_recipe(tmp_path / "grpo.yaml", recipe), plugins=reward_plugins), reward_plugins)
    records = [json.loads(line) for line in (result.run_dir / "guard.jsonl").read_text().splitlines()]
    assert [(r["step"], r["margin_exceeded"]) for r in records] == [(0, False), (2, False), (4, True)]
    assert records[-1]["drop"] == pytest.approx(0.2)
    assert max(r["step"] for r in read_history(result.history)) == 4  # stopped there, not at max_steps
    reward_plugins.unregister("falling")


def _write_pairs(folder, count: int = 4):
    """A preference file: chosen = a rendered scene for its caption, rejected = a grey picture."""
    from modal_core_images.shapes import caption, render_scene, scene_for_index

    folder.mkdir()
    lines = []
    for index in range(count):
        scene = scene_for_index(index, 0, "train", image_size=32)
        render_scene(scene).save(folder / f"chosen-{index}.png")
        Image.new("RGB", (32, 32), (128, 128, 128)).save(folder / f"rejected-{index}.png")
        lines.append(json.dumps({"prompt": caption(scene), "chosen": f"chosen-{index}.png", "rejected": f"rejected-{index}.png"}))
    (folder / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "pairs.jsonl"


def test_dpo_on_a_preference_file_starts_at_log_two_and_learns_the_preference(tmp_path, reward_plugins):
    recipe = grpo_recipe(tmp_path, method="dpo", rewards=[], pairs=str(_write_pairs(tmp_path / "pairs")), beta=0.5)
    recipe["modalities"]["vq_generation"]["image_size"] = 32
    recipe["trainer"]["max_steps"] = 8
    result = train(load_recipe(write_recipe(tmp_path / "dpo.yaml", recipe), plugins=reward_plugins), reward_plugins)
    history = read_history(result.history)
    losses = [r["train/loss"] for r in history]
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6)  # the policy is the reference at step 0
    assert losses[-1] < 0.5 * losses[0]
    assert history[-1]["train/preference_accuracy"] == 1.0 and history[-1]["train/pairs"] == 4


def test_dpo_from_sampled_pairs_ranks_the_references_samples_by_the_reward(tmp_path, reward_plugins):
    recipe = grpo_recipe(tmp_path, method="dpo")
    recipe["trainer"]["max_steps"] = 3
    result = train(load_recipe(write_recipe(tmp_path / "dpo.yaml", recipe), plugins=reward_plugins), reward_plugins)
    history = read_history(result.history)
    assert history[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(r["train/zero_variance_groups"] == 0.0 and r["train/pairs"] >= 1 for r in history)


def test_with_lora_the_reference_is_the_base_model_and_the_kl_starts_at_zero(tmp_path, reward_plugins):
    recipe = grpo_recipe(tmp_path)
    recipe.update(train=[], lora={"rank": 2, "alpha": 4.0, "targets": ["q_proj", "v_proj"]})
    recipe["trainer"]["max_steps"] = 3
    result = train(load_recipe(write_recipe(tmp_path / "grpo.yaml", recipe), plugins=reward_plugins), reward_plugins)
    kl = [r["train/kl"] for r in read_history(result.history)]
    assert kl[0] == 0.0 and kl[-1] > 0.0  # the adapters moved the policy away from the base weights
