"""Build a model without allocating its weights, then adopt a checkpoint's tensors.

A model built the usual way holds random weights that `load_state_dict` then
overwrites: two full copies at the peak, too much for a 7B checkpoint. Here every
parameter is created on the meta device (no memory, no initialisation work) and the
checkpoint's tensors, read one at a time, become the parameters. Buffers are created
normally: persistent ones are overwritten by the checkpoint, non-persistent ones (rotary
frequencies, position ids) keep the values their module computed.
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


def assign_checkpoint(model: nn.Module, directory: str | Path) -> None:
    """Make the tensors of `directory/model.safetensors` the model's weights, reading one
    tensor at a time. Every model tensor must be in the file with the same shape."""
    path = Path(directory) / MODEL_FILE
    expected = model.state_dict(keep_vars=True)
    try:
        with safe_open(str(path), framework="pt") as checkpoint:
            keys = set(checkpoint.keys())
            unexpected = sorted(keys - set(expected))
            missing = sorted(key for key in set(expected) - keys if _is_persistent(model, key))
            if unexpected or missing:
                raise CheckpointError(f"{path} does not fit this model: unexpected {_few(unexpected)}, missing {_few(missing)}")
            for key in sorted(keys):
                tensor = checkpoint.get_tensor(key)
                if tensor.shape != expected[key].shape:
                    raise CheckpointError(f"{path}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}")
                _assign(model, key, tensor)
    except SafetensorError as error:
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({error})") from error
    left = [name for name, parameter in model.named_parameters() if parameter.device.type == "meta"]
    if left:
        raise CheckpointError(f"{path} left parameters without values: {_few(left)}")


def _assign(model: nn.Module, key: str, tensor: torch.Tensor) -> None:
    owner_name, _, name = key.rpartition(".")
    owner = model.get_submodule(owner_name)
    if name in owner._parameters:
        owner._parameters[name] = nn.Parameter(tensor, requires_grad=owner._parameters[name].requires_grad)
    else:
        owner._buffers[name] = tensor


def _is_persistent(model: nn.Module, key: str) -> bool:
    owner_name, _, name = key.rpartition(".")
    return name not in model.get_submodule(owner_name)._non_persistent_buffers_set


def _few(items: list[str]) -> str:
    return f"{items[:6]}{' and %d more' % (len(items) - 6) if len(items) > 6 else ''}"
