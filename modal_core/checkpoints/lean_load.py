"""Build a model without allocating its weights, then adopt a checkpoint's tensors.

A model built the usual way holds random weights that `load_state_dict` then
overwrites: two full copies at the peak, too much for a 7B checkpoint. Here every
parameter is created on the meta device (no memory, no initialisation work) and the
checkpoint's tensors, read one at a time, become the parameters. Buffers are created
normally: persistent ones are overwritten by the checkpoint, non-persistent ones (rotary
frequencies, position ids) keep the values their module computed. Parts built
normally next to meta ones (a new modality, LoRA factors) keep their fresh values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from modal_core.checkpoints.store import MODEL_FILE
from modal_core.errors import CheckpointError


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Inside this context every new `nn.Parameter` lives on the meta device."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, parameter: nn.Parameter | None) -> None:
        register(module, name, parameter)
        if parameter is not None and parameter.device.type != "meta":
            kind = type(module._parameters[name])
            module._parameters[name] = kind(parameter.to("meta"), requires_grad=parameter.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def assign_checkpoint(model: nn.Module, directory: str | Path, cast: bool = False) -> list[str]:
    """Make the tensors of `directory/model.safetensors` the model's weights, reading one
    tensor at a time; returns the model keys the file lacked (fresh values, see below).

    Every tensor on the meta device must be in the file with the same shape. Parameters
    built normally (a modality the checkpoint lacks, LoRA factors) may be absent: they
    keep their initialisation. With `cast` each tensor takes the dtype the model was
    built with (a bfloat16 checkpoint trains in float32 unless the recipe says
    otherwise); without it the file's dtype is kept. Weights the model ties (one
    parameter under two names, e.g. an LM head sharing the token embeddings) stay tied."""
    path = Path(directory) / MODEL_FILE
    expected = model.state_dict(keep_vars=True)
    aliases = _aliases(model)
    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            keys = set(checkpoint.keys())
            unexpected = sorted(keys - set(expected))
            absent = sorted(set(expected) - keys - set(aliases))
            missing = [key for key in absent if _needs_file(model, key, expected[key])]
            if unexpected or missing:
                raise CheckpointError(f"{path} does not fit this model: unexpected {_few(unexpected)}, missing {_few(missing)}")
            for key in sorted(keys - set(aliases)):
                tensor = checkpoint.get_tensor(key)
                if tensor.shape != expected[key].shape:
                    raise CheckpointError(f"{path}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}")
                _assign(model, key, tensor.to(expected[key].dtype) if cast else tensor)
    except SafetensorError as error:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({error})") from error
    for alias, source in aliases.items():
        owner_name, _, name = alias.rpartition(".")
        model.get_submodule(owner_name)._parameters[name] = model.get_parameter(source)
    left = [name for name, parameter in model.named_parameters() if parameter.device.type == "meta"]
    if left:
        raise CheckpointError(f"{path} left parameters without values: {_few(left)}")
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


def _needs_file(model: nn.Module, key: str, tensor: torch.Tensor) -> bool:
    """Whether `key` can only get its value from the checkpoint: a parameter on the meta
    device, or a buffer of a module whose parameters are (built to be loaded)."""
    if tensor.device.type == "meta":
        return True
    owner_name, _, name = key.rpartition(".")
    owner = model.get_submodule(owner_name)
    return name in owner._buffers and any(p.device.type == "meta" for p in owner.parameters(recurse=False))


def _assign(model: nn.Module, key: str, tensor: torch.Tensor) -> None:
    owner_name, _, name = key.rpartition(".")
    owner = model.get_submodule(owner_name)
    if name in owner._parameters:
        owner._parameters[name] = nn.Parameter(tensor, requires_grad=owner._parameters[name].requires_grad)
    else:
        owner._buffers[name] = tensor


def _few(items: list[str]) -> str:
    return f"{items[:6]}{' and %d more' % (len(items) - 6) if len(items) > 6 else ''}"
