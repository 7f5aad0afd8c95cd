"""Text-only training end to end: loss falls, checkpoints round-trip, resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_text_recipe, write_recipe

from modal_core.checkpoints import store
from modal_core.checkpoints.run_folder import read_history
from modal_core.checkpoints.serialization import flatten_state, unflatten_state
from modal_core.checkpoints.store import resolve_checkpoint
from modal_core.config.loader import load_recipe
from modal_core.errors import CheckpointError
from modal_core.training.run import train


def _train(tmp_path: Path, plugins, name: str, overrides=(), **sections):
    path = write_recipe(tmp_path / f"{name}.yaml", tiny_text_recipe(tmp_path / name, **sections))
    return train(load_recipe(path, list(overrides), plugins), plugins)


def _losses(result) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_history(result.history) if "train/loss" in r}


def test_text_training_loss_falls_and_writes_a_checkpoint(tmp_path, plugins):
    result = _train(tmp_path, plugins, "fall", trainer={"max_steps": 40, "checkpoint_every_n_steps": 20})
    losses = _losses(result)
    assert sorted(losses) == list(range(1, 41))
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(36, 41)) / 5
    assert last < 0.6 * first, (first, last)
    assert result.checkpoint.name == "step-000040"
    assert (result.run_dir / "recipe.yaml").is_file()
    assert {p.name for p in (result.run_dir / "checkpoints").iterdir()} == {"last", "step-000020", "step-000040"}
    saved = load_recipe(result.checkpoint / "recipe.yaml")
    assert saved.trainer.max_steps == 40
    assert (result.checkpoint / "tokenizer.json").is_file()


def test_resumed_run_reproduces_the_uninterrupted_run(tmp_path, plugins):
    full = _train(tmp_path, plugins, "full", trainer={"max_steps": 12, "checkpoint_every_n_steps": 6})
    first_half = _train(tmp_path, plugins, "half", trainer={"max_steps": 6})
    resumed = _train(tmp_path, plugins, "half", [f"resume={first_half.run_dir}"], trainer={"max_steps": 12})
    full_losses, resumed_losses = _losses(full), _losses(resumed)
    assert sorted(resumed_losses) == list(range(1, 13))
    for step in range(1, 13):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-5, abs=1e-6), step
    full_weights = store.load_model_state(full.checkpoint)
    resumed_weights = store.load_model_state(resumed.checkpoint)
    assert full_weights.keys() == resumed_weights.keys()
    for key in full_weights:
        torch.testing.assert_close(resumed_weights[key], full_weights[key], rtol=1e-5, atol=1e-6)


def test_init_from_loads_weights_and_tokenizer(tmp_path, plugins):
    first = _train(tmp_path, plugins, "stage1", trainer={"max_steps": 3})
    second = _train(
        tmp_path, plugins, "stage2", [f"init_from={first.checkpoint}", "optim.lr=0.0", "optim.warmup_steps=0"], trainer={"max_steps": 2}
    )
    before, after = store.load_model_state(first.checkpoint), store.load_model_state(second.checkpoint)
    for key in before:
        torch.testing.assert_close(after[key], before[key])  # lr 0: the loaded weights are kept
    assert (second.checkpoint / "tokenizer.json").read_text() == (first.checkpoint / "tokenizer.json").read_text()


def test_state_serialization_round_trip_keeps_types():
    state = {
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
            "param_groups": [{"betas": (0.9, 0.95), "params": [0], "foreach": None}],
        },
        "rng": (3, (1, 2, 3), None),
        "flags": [True, 1.5, "x"],
    }
    skeleton, tensors = flatten_state(state)
    json.dumps(skeleton)  # the skeleton is plain JSON
    restored = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert list(restored["optimizer"]["state"]) == [0]  # int keys survive
    assert restored["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert restored["rng"] == (3, (1, 2, 3), None)
    assert torch.equal(restored["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    with pytest.raises(CheckpointError, match="cannot store object"):
        flatten_state({"bad": object()})


def test_checkpoint_writes_are_atomic_and_verified(tmp_path):
    target = tmp_path / "ckpt"

    def fail(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.write_atomically(target, fail)
    assert not target.exists() and not list(tmp_path.iterdir())  # nothing half-written remains
    store.write_atomically(target, lambda d: store.save_model_state({"w": torch.ones(3)}, d))
    assert torch.equal(store.load_model_state(target)["w"], torch.ones(3))
    with (target / "model.safetensors").open("r+b") as handle:
        handle.truncate(10)
    with pytest.raises(CheckpointError, match="truncated"):
        store.load_model_state(target)
    with pytest.raises(CheckpointError, match="not a modal-core checkpoint"):
        store.verify(tmp_path)
    with pytest.raises(Exception, match="no checkpoint at"):
        resolve_checkpoint(tmp_path / "missing")
