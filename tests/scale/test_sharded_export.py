"""Sharded FSDP checkpoints: the folder FSDP's ranks write, made a run checkpoint, and
consolidated into one safetensors checkpoint.

The shards here are written in one process by `torch.distributed.checkpoint`, the
writer Lightning's `ModelParallelStrategy` calls, with the same layout (`state_dict` +
`optimizer_0` at the top, LightningModule keys below); tests/scale/test_fsdp.py
exports the shards of a real 2-process run.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed.checkpoint as dcp
from conftest import TINY_BACKBONE

from modal_core.checkpoints import store
from modal_core.cli import main
from modal_core.errors import CheckpointError
from modal_core.model.backbone import build_backbone
from modal_core.model.unified import UnifiedModel
from modal_core.scale.sharded import MODEL_KEY, export_sharded_checkpoint, finish_sharded_checkpoint, is_sharded_checkpoint


def _write_extras(directory):
    (directory / "recipe.yaml").write_text("description: sharded\n")
    (directory / "backbone").mkdir()
    (directory / "backbone" / "config.json").write_text("{}")


@pytest.fixture
def sharded(tmp_path):
    torch.manual_seed(0)
    model = UnifiedModel(build_backbone(None, "llama", TINY_BACKBONE["config"], vocab_size=40), {}, {}, {})
    directory = tmp_path / "step-000010"
    optimizer_state = {"state": {"model.backbone.lm_head.weight": {"exp_avg": torch.ones(40, 32)}}}
    state = {MODEL_KEY: {f"model.{key}": value for key, value in model.state_dict().items()}, "optimizer_0": optimizer_state}
    dcp.save(state, checkpoint_id=str(directory), no_dist=True)
    finish_sharded_checkpoint(directory, _write_extras)
    return model, directory


def test_a_sharded_checkpoint_consolidates_into_an_ordinary_one(tmp_path, sharded):
    model, directory = sharded
    assert is_sharded_checkpoint(directory)
    with pytest.raises(CheckpointError, match="sharded FSDP checkpoint.*export-checkpoint"):
        store.load_model_state(directory)
    target = export_sharded_checkpoint(directory, tmp_path / "export")
    weights = store.load_model_state(target)  # verifies the new manifest
    expected = model.state_dict()
    assert weights.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(weights[key], value), key
    assert (target / "recipe.yaml").read_text() == "description: sharded\n"
    assert (target / "backbone" / "config.json").is_file()
    assert not list(target.glob("*.distcp")) and not (target / ".metadata").exists()
    fresh = UnifiedModel(build_backbone(None, "llama", TINY_BACKBONE["config"], vocab_size=40), {}, {}, {})
    assert store.load_into(fresh, target) == []


def test_export_command_and_its_errors(tmp_path, sharded, capsys, plugins):
    _, directory = sharded
    assert main(["export-checkpoint", str(directory), str(tmp_path / "out")], plugins) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["export-checkpoint", str(tmp_path / "out"), str(tmp_path / "again")], plugins) == 1
    assert "not a sharded modal-core checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no torch.distributed.checkpoint shards"):
        finish_sharded_checkpoint(tmp_path / "out", _write_extras)
