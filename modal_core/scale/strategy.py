"""Turn the recipe's `trainer` block into a Lightning strategy and precision.

Only Lightning's own strategies are used (DDP, FSDP, DeepSpeed); this module picks
one, points FSDP at the model's blocks and checks the settings with clear errors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import Strategy
from torch import nn

from modal_core.errors import RecipeError
from modal_core.scale.blocks import checkpoint_blocks
from modal_core.scale.sharded import ShardedCheckpointFSDP

STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")
FSDP_STATE_DICT = ("full", "sharded")


def check_trainer_settings(settings: Any) -> None:
    """Reject unknown strategy, precision and FSDP values before anything is built."""
    if settings.strategy not in STRATEGIES:
        raise RecipeError(f"trainer.strategy: expected one of {list(STRATEGIES)}, got {settings.strategy!r}")
    if str(settings.precision) not in PRECISIONS:
        raise RecipeError(f"trainer.precision: expected one of {list(PRECISIONS)}, got {settings.precision!r}")
    if settings.fsdp_sharding not in FSDP_SHARDING:
        raise RecipeError(f"trainer.fsdp_sharding: expected one of {list(FSDP_SHARDING)}, got {settings.fsdp_sharding!r}")
    if settings.fsdp_state_dict not in FSDP_STATE_DICT:
        raise RecipeError(f"trainer.fsdp_state_dict: expected one of {list(FSDP_STATE_DICT)}, got {settings.fsdp_state_dict!r}")
    if settings.accumulate_grad_batches < 1:
        raise RecipeError(f"trainer.accumulate_grad_batches must be >= 1, got {settings.accumulate_grad_batches}")
    if settings.gradient_clip_val is not None and settings.gradient_clip_val <= 0:
        raise RecipeError(f"trainer.gradient_clip_val must be > 0 or null (no clipping), got {settings.gradient_clip_val}")
    if settings.strategy == "fsdp" and settings.accelerator == "cpu":
        raise RecipeError("trainer.strategy: fsdp needs GPUs (torch's FSDP has no CPU mode); use `ddp` on CPU")
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
    check_trainer_settings(settings)
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
