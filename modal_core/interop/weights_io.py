"""Read and write model weights the way Hugging Face lays them out on disk.

Reading yields tensors one file (shard) at a time, so a converter holds at most one
shard it has not passed on yet. Writing fills shards up to a size limit and writes the
`model.safetensors.index.json` that maps each key to its shard, exactly the layout
`from_pretrained` reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from modal_core.errors import CheckpointError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a Hugging Face-style model folder, in shard order:
    safetensors (single or indexed) first, then PyTorch `.bin` files (single or indexed)."""
    for index_name, single_name in ((SAFETENSORS_INDEX, SAFETENSORS_SINGLE), (PICKLE_INDEX, PICKLE_SINGLE)):
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise CheckpointError(f"{index} is not a valid weight index (expected a 'weight_map' object): {error}") from error
            files = [directory / name for name in sorted(set(weight_map.values()))]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{index} names shards that are missing: {missing[:3]}")
            return files
        if (directory / single_name).is_file():
            return [directory / single_name]
    raise CheckpointError(
        f"no weights in {directory}: expected {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, {PICKLE_SINGLE} or {PICKLE_INDEX}"
    )


def iter_tensors(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (key, tensor) of a model folder, read shard by shard."""
    for path in weight_files(directory):
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as shard:
                    for key in shard.keys():
                        yield key, shard.get_tensor(key)
            except SafetensorError as error:
                raise CheckpointError(f"{path} is damaged or not a safetensors file ({error})") from error
        else:
            try:  # official Janus releases are PyTorch pickles; weights_only refuses code
                shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:
                raise CheckpointError(f"{path} could not be read as a PyTorch state dict ({error})") from error
            if not isinstance(shard, dict):
                raise CheckpointError(f"{path} holds a {type(shard).__name__}, expected a state dict")
            yield from shard.items()
            del shard


class ShardWriter:
    """Writes tensors into `model-0000k-of-0000n.safetensors` shards of at most
    `max_shard_bytes` each (a bigger single tensor gets a shard of its own), then the
    index; a model that fits one shard becomes a plain `model.safetensors`."""

    def __init__(self, directory: Path, max_shard_bytes: int) -> None:
        if max_shard_bytes <= 0:
            raise CheckpointError(f"the shard size must be positive, got {max_shard_bytes} bytes")
        self.directory = directory
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self._total_bytes = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; a full shard is written out first."""
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[key] = tensor.contiguous()
        self._pending_bytes += size
        self._total_bytes += size

    def close(self) -> list[Path]:
        """Write the last shard and the index; returns the weight files written."""
        self._flush()
        count = len(self._shards)
        if count == 1:
            (self.directory / self._temporary_name(0)).rename(self.directory / SAFETENSORS_SINGLE)
            return [self.directory / SAFETENSORS_SINGLE]
        names = [f"model-{k + 1:05d}-of-{count:05d}.safetensors" for k in range(count)]
        weight_map = {}
        for k, (name, keys) in enumerate(zip(names, self._shards)):
            (self.directory / self._temporary_name(k)).rename(self.directory / name)
            weight_map.update(dict.fromkeys(keys, name))
        index = {"metadata": {"total_size": self._total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))
        return [self.directory / name for name in names]

    def _temporary_name(self, number: int) -> str:
        return f".shard-{number:05d}.safetensors"

    def _flush(self) -> None:
        if not self._pending and self._shards:
            return
        save_file(self._pending, str(self.directory / self._temporary_name(len(self._shards))), metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0


def parse_size(size: str | int) -> int:
    """Bytes of a size like `5GB`, `500MB`, `100KB` or a plain integer."""
    if isinstance(size, int):
        return size
    text = size.strip().upper()
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"cannot read the size {size!r}: write e.g. 5GB, 500MB or a number of bytes") from None
