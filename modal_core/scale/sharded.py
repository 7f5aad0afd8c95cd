"""Sharded FSDP checkpoints and their consolidation into a modal-core checkpoint.

With `trainer.fsdp_state_dict: sharded` every rank writes only its own shard of the
weights and optimizer state (`torch.distributed.checkpoint`, through Lightning's
`ModelParallelStrategy`, see `modal_core.scale.fsdp`), so no process ever holds the
full model. Rank 0 then adds the recipe, the tokenizer and a manifest tagged
`SHARDED_FORMAT`, which makes the folder a run checkpoint that `resume=` accepts.
`export_sharded_checkpoint` turns one into an ordinary checkpoint directory (a single
`model.safetensors`) for inference and `init_from`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from modal_core.checkpoints.lightning_io import MODEL_PREFIX
from modal_core.checkpoints.store import (
    MANIFEST,
    SHARDED_FORMAT,
    save_model_state,
    write_atomically,
)
from modal_core.errors import CheckpointError

DCP_METADATA = ".metadata"
"""The index file `torch.distributed.checkpoint` writes next to the shards."""
LIGHTNING_METADATA = "meta.pt"
"""Lightning's loop state of a sharded checkpoint; only Lightning's resume reads it."""
MODEL_KEY = "state_dict"
"""Top-level key of the weights in the sharded state (`optimizer_<i>` hold the optimizer states)."""


def finish_sharded_checkpoint(directory: Path, write_extras: Callable[[Path], None]) -> None:
    """Add the run's files and a `SHARDED_FORMAT` manifest to a folder of shards."""
    if not (directory / DCP_METADATA).is_file():
        raise CheckpointError(f"{directory} holds no torch.distributed.checkpoint shards ({DCP_METADATA} is missing)")
    write_extras(directory)
    sizes = {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"format": SHARDED_FORMAT, "files": sizes}, indent=1))


def is_sharded_checkpoint(directory: Path) -> bool:
    """Whether `directory` is a sharded checkpoint written by `FullyShardedStrategy`."""
    manifest = Path(directory) / MANIFEST
    return manifest.is_file() and json.loads(manifest.read_text()).get("format") == SHARDED_FORMAT


def load_sharded_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The full model state dict of a sharded checkpoint, gathered in this process
    (CPU memory must hold the whole model once; no GPU and no process group needed)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    if not (Path(directory) / DCP_METADATA).is_file():
        raise CheckpointError(f"{directory} is not a sharded checkpoint ({DCP_METADATA} of torch.distributed.checkpoint is missing)")
    state: dict[str, Any] = {}
    _load_state_dict(
        state, storage_reader=FileSystemReader(str(directory)), planner=_EmptyStateDictLoadPlanner(keys={MODEL_KEY}), no_dist=True
    )
    if MODEL_KEY not in state:
        raise CheckpointError(f"{directory}: the shards hold no {MODEL_KEY!r} weights")
    return {key.removeprefix(MODEL_PREFIX): tensor for key, tensor in state[MODEL_KEY].items()}


def export_sharded_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Consolidate the sharded checkpoint `source` into the ordinary checkpoint
    directory `target`: one `model.safetensors` plus the recipe, tokenizer and backbone
    config. The export holds weights only (resume a run from the sharded original)."""
    source, target = Path(source), Path(target)
    if not is_sharded_checkpoint(source):
        raise CheckpointError(f"{source} is not a sharded modal-core checkpoint (no manifest with format {SHARDED_FORMAT!r})")
    weights = load_sharded_weights(source)
    shard_files = {MANIFEST, DCP_METADATA, LIGHTNING_METADATA}

    def fill(directory: Path) -> None:
        save_model_state(weights, directory)
        for item in source.iterdir():
            if item.name in shard_files or item.suffix == ".distcp":
                continue
            if item.is_dir():
                shutil.copytree(item, directory / item.name)
            else:
                shutil.copy2(item, directory / item.name)

    write_atomically(target, fill)
    return target
