"""Adopt a checkpoint's tensors into a model built without its weights.

A model built the usual way holds random weights that `load_state_dict` then
overwrites: two full copies at the peak, too much for a 7B checkpoint. Instead the
model is built under `torch.device("meta")` (no memory, no initialisation work) and
`load_state_dict(assign=True)` makes the checkpoint's tensors its parameters. What a
checkpoint does not hold, the non-persistent buffers a module computes when it is
built (rotary frequencies, position ids), is computed again by `compute_buffers`.
Parts built normally next to meta ones (a new modality, LoRA factors) keep their
fresh values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import PreTrainedModel

from modal_core.checkpoints.store import MODEL_FILE
from modal_core.errors import CheckpointError


def compute_buffers(model: nn.Module) -> list[str]:
    """Give the non-persistent buffers still on the meta device their values, computed
    by the initialisation of the transformers model that holds them (transformers'
    own way after a meta-device build); returns the names of those no transformers
    model holds, which the caller must compute (e.g. from a twin built normally).

    Call it before weights are assigned: the initialisation also touches the owning
    module's parameters, which are then still on the meta device, where it does nothing."""
    left = []
    for name, module, owner in _modules_with_owner(model):
        computed = [
            key for key in module._non_persistent_buffers_set if module._buffers.get(key) is not None and module._buffers[key].is_meta
        ]
        if not computed:
            continue
        if owner is None:
            left += [f"{name}.{key}" if name else key for key in computed]
            continue
        for key in computed:
            module._buffers[key] = torch.empty_like(module._buffers[key], device="cpu")
        owner._init_weights(module)
    return left


def _modules_with_owner(
    module: nn.Module, owner: PreTrainedModel | None = None, name: str = ""
) -> Iterator[tuple[str, nn.Module, PreTrainedModel | None]]:
    """Every module under `module` with its name and the innermost transformers model holding it."""
    owner = module if isinstance(module, PreTrainedModel) else owner
    yield name, module, owner
    for child_name, child in module.named_children():
        yield from _modules_with_owner(child, owner, f"{name}.{child_name}" if name else child_name)


def assign_checkpoint(model: nn.Module, directory: str | Path, cast: bool = False) -> list[str]:
    """Make the tensors of `directory/model.safetensors` the model's weights
    (`load_state_dict(assign=True)`, so the file's tensors are not copied); returns the
    model keys the file lacked (fresh values, see below).

    Every tensor on the meta device must be in the file with the same shape. Parameters
    built normally (a modality the checkpoint lacks, LoRA factors) may be absent: they
    keep their initialisation. With `cast` each tensor takes the dtype the model was
    built with (a bfloat16 checkpoint trains in float32 unless the recipe says
    otherwise); without it the file's dtype is kept. Weights the model ties (one
    parameter under two names, e.g. an LM head sharing the token embeddings) stay tied."""
    path = Path(directory) / MODEL_FILE
    expected = model.state_dict(keep_vars=True)
    aliases = _aliases(model)
    state = {}
    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            keys = set(checkpoint.keys())
            unexpected = sorted(keys - set(expected))
            absent = sorted(set(expected) - keys - set(aliases))
            missing = [key for key in absent if expected[key].is_meta]  # built to be loaded
            if unexpected or missing:
                raise CheckpointError(f"{path} does not fit this model: unexpected {_few(unexpected)}, missing {_few(missing)}")
            for key in sorted(keys - set(aliases)):
                tensor = checkpoint.get_tensor(key)  # mapped from the file: read when first used
                if tensor.shape != expected[key].shape:
                    raise CheckpointError(f"{path}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}")
                state[key] = tensor.to(expected[key].dtype) if cast else tensor
    except SafetensorError as error:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({error})") from error
    model.load_state_dict(state, strict=False, assign=True)
    for alias, source in aliases.items():
        owner_name, _, name = alias.rpartition(".")
        model.get_submodule(owner_name)._parameters[name] = model.get_parameter(source)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise CheckpointError(f"{path} left parameters or buffers without values: {_few(left)}")
    return absent


def checkpoint_keys(directory: str | Path) -> list[str]:
    """The tensor names of `directory/model.safetensors` (read from its header only)."""
    path = Path(directory) / MODEL_FILE
    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            return list(checkpoint.keys())
    except SafetensorError as error:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({error})") from error


def _aliases(model: nn.Module) -> dict[str, str]:
    """Second and later names of parameters registered under several names -> the first."""
    first: dict[int, str] = {}
    aliases = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in first:
            aliases[name] = first[id(parameter)]
        else:
            first[id(parameter)] = name
    return aliases


def _few(items: list[str]) -> str:
    return f"{items[:6]}{' and %d more' % (len(items) - 6) if len(items) > 6 else ''}"
