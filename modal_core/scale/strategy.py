"""Turn the recipe's `trainer` block into a Lightning strategy and precision.

Only Lightning's own strategies are used (DDP, FSDP2 through `ModelParallelStrategy`,
DeepSpeed); this module picks one, points FSDP at the model's blocks, chooses its mixed
precision and checks the settings with clear errors.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import Strategy
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy

from modal_core.errors import RecipeError
from modal_core.scale.blocks import checkpoint_blocks
from modal_core.scale.fsdp import FullyShardedStrategy


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
    if settings.strategy == "fsdp" and str(settings.precision) == "bf16-mixed" and not _bf16_supported(settings.accelerator):
        raise RecipeError("trainer.precision: bf16-mixed with strategy fsdp, but this GPU has no bfloat16 support; use 32-true")


def _bf16_supported(accelerator: str) -> bool:
    uses_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return not uses_cuda or torch.cuda.is_bf16_supported()


def lightning_precision(settings: Any) -> str:
    """The precision Lightning is given: under FSDP, `bf16-mixed` is FSDP2's own
    `MixedPrecisionPolicy` (see `build_strategy`), so Lightning adds no autocast."""
    precision = str(settings.precision)
    return "32-true" if settings.strategy == "fsdp" and precision == "bf16-mixed" else precision


def build_strategy(
    settings: Any, model: nn.Module, blocks: tuple[type[nn.Module], ...], write_extras: Callable[[Path], None]
) -> str | Strategy:
    """The Lightning strategy for the recipe's `trainer` block.

    FSDP shards every block in its own unit and applies activation checkpointing itself
    (before sharding, in the LightningModule's `configure_model`); with `bf16-mixed` it
    gathers and computes in bfloat16 and reduces gradients in float32. For the other
    strategies the model's blocks are wrapped here, before Lightning sees the model.
    `write_extras(directory)` adds the run's files to sharded FSDP checkpoints.
    """
    check_machine(settings)
    if settings.strategy == "fsdp":
        if not blocks:
            raise RecipeError("trainer.strategy: fsdp found no block classes to wrap in this model; its blocks cannot be sharded")
        half = str(settings.precision) == "bf16-mixed"
        return FullyShardedStrategy(
            write_extras,
            blocks,
            sharding=settings.fsdp_sharding,
            state_dict=settings.fsdp_state_dict,
            activation_checkpointing=settings.activation_checkpointing,
            mixed_precision=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if half else None,
        )
    if settings.activation_checkpointing and not checkpoint_blocks(model, blocks):
        raise RecipeError("trainer.activation_checkpointing: the model has no block to checkpoint")
    return settings.strategy
