"""Store nested training state (dicts, lists, tuples, numbers, strings, tensors) as one
safetensors file plus a JSON skeleton, so no checkpoint is ever a pickle.

The skeleton keeps structure and key types (optimizer states are keyed by int); each
tensor is replaced by a reference into the safetensors file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from modal_core.checkpoints.hashed_writer import save_hashed
from modal_core.errors import CheckpointError


def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split `state` into a JSON-serialisable skeleton and a flat tensor dict."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().contiguous().cpu()
            return {"__tensor__": path}
        if isinstance(value, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
            return {"__ndarray__": path}
        if isinstance(value, dict):
            return {"__dict__": [[key, encode(item, f"{path}.{key}")] for key, item in value.items()]}
        if isinstance(value, tuple):
            return {"__tuple__": [encode(item, f"{path}.{i}") for i, item in enumerate(value)]}
        if isinstance(value, list):
            return [encode(item, f"{path}.{i}") for i, item in enumerate(value)]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        raise CheckpointError(
            f"cannot store {type(value).__name__} at {path!r} in a checkpoint (only tensors, numbers, strings, containers)"
        )

    return encode(state, "state"), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten_state`."""

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(item) for item in value]
        if isinstance(value, dict):
            if "__tensor__" in value:
                return tensors[value["__tensor__"]]
            if "__ndarray__" in value:
                return tensors[value["__ndarray__"]].numpy()
            if "__tuple__" in value:
                return tuple(decode(item) for item in value["__tuple__"])
            return {key: decode(item) for key, item in value["__dict__"]}
        return value

    return decode(skeleton)


def save_state(state: Any, directory: Path, stem: str) -> None:
    """Write `state` as `<stem>.json` + `<stem>.safetensors` in `directory`."""
    skeleton, tensors = flatten_state(state)
    save_hashed(tensors, directory / f"{stem}.safetensors")
    (directory / f"{stem}.json").write_text(json.dumps(skeleton))


def load_state(directory: Path, stem: str) -> Any:
    """Read what `save_state` wrote, with a clear error for missing or damaged files."""
    skeleton_path, tensor_path = directory / f"{stem}.json", directory / f"{stem}.safetensors"
    for path in (skeleton_path, tensor_path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint file missing: {path}")
    try:
        skeleton = json.loads(skeleton_path.read_text())
        tensors = load_file(str(tensor_path))
    except Exception as error:
        raise CheckpointError(f"checkpoint {directory} is damaged or not a modal-core checkpoint ({error})") from error
    return unflatten_state(skeleton, tensors)
