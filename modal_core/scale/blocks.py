"""The repeated blocks of a model: the units FSDP shards and activation checkpointing
recomputes.

The backbone's decoder layers are found through transformers, whose layer classes
derive from `GradientCheckpointingLayer`; encoders, adapters and heads contribute the
classes their plugins declare with the `modal_core_block_classes` hook.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    CheckpointWrapper,
    apply_activation_checkpointing,
)
from transformers.modeling_layers import GradientCheckpointingLayer


def block_classes(model: nn.Module, declared: Iterable[type[nn.Module]] = ()) -> tuple[type[nn.Module], ...]:
    """Block classes present in `model`: the transformers decoder layers of its
    `backbone` (the whole model when it has none) plus the `declared` classes it uses."""
    backbone = getattr(model, "backbone", model)
    found = {type(module): None for module in backbone.modules() if isinstance(module, GradientCheckpointingLayer)}
    declared = tuple(declared)
    for module in model.modules():
        if declared and isinstance(module, declared) and not isinstance(module, CheckpointWrapper):
            found[type(module)] = None
    return tuple(found)


def checkpoint_blocks(model: nn.Module, classes: tuple[type[nn.Module], ...]) -> int:
    """Wrap every instance of `classes` in `model` so that its activations are
    recomputed in the backward pass; returns how many blocks were wrapped.

    The wrapper keeps state-dict keys unchanged, so checkpoints stay interchangeable
    with runs trained without it. Non-reentrant checkpointing is used: it supports
    keyword arguments (transformers layers take several) and frozen inputs.
    """
    if not classes:
        return 0
    before = sum(isinstance(m, CheckpointWrapper) for m in model.modules())
    apply_activation_checkpointing(
        model,
        checkpoint_wrapper_fn=lambda module: CheckpointWrapper(module, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda module: isinstance(module, classes),
    )
    return sum(isinstance(m, CheckpointWrapper) for m in model.modules()) - before
