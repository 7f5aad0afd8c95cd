"""Turn the recipe's `trainer` block into a Lightning strategy and precision.

Only Lightning's own strategies are used (DDP, FSDP, DeepSpeed); this module picks
one, points FSDP at the model's blocks and checks the settings with clear errors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import Strategy
from torch import nn

from modal_core.errors import RecipeError
from modal_core.scale.blocks import checkpoint_blocks
from modal_core.scale.sharded import ShardedCheckpointFSDP


def check_machine(settings: Any) -> None:
    """Reject trainer settings this machine cannot run, before anything is built (the
    recipe's own values and rules were checked by the schema when it loaded)."""
    if settings.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RecipeError(f"trainer.accelerator: {settings.accelerator!r}, but this machine has no usable CUDA GPU; use `cpu` or `auto`")
    if settings.strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise RecipeError(
            f"trainer.strategy: {settings.strategy!r} needs DeepSpeed, which is not installed "
            "(`pip install deepspeed`); or use `fsdp`, which shards the same way without it"
        )


def build_strategy(
    settings: Any, model: nn.Module, blocks: tuple[type[nn.Module], ...], write_extras: Callable[[Path], None]
) -> str | Strategy:
    """The Lightning strategy for the recipe's `trainer` block.

    FSDP wraps every block class in its own unit and applies activation checkpointing
    itself (after wrapping, as it must); for the other strategies the model's blocks are
    wrapped here, before Lightning sees the model. `write_extras(directory)` adds the
    run's files to sharded FSDP checkpoints.
    """
    check_machine(settings)
    if settings.strategy == "fsdp":
        if not blocks:
            raise RecipeError("trainer.strategy: fsdp found no block classes to wrap in this model; its blocks cannot be sharded")
        return ShardedCheckpointFSDP(
            write_extras,
            auto_wrap_policy=set(blocks),
            activation_checkpointing_policy=set(blocks) if settings.activation_checkpointing else None,
            sharding_strategy=settings.fsdp_sharding,
            state_dict_type=settings.fsdp_state_dict,
        )
    if settings.activation_checkpointing and not checkpoint_blocks(model, blocks):
        raise RecipeError("trainer.activation_checkpointing: the model has no block to checkpoint")
    return settings.strategy
