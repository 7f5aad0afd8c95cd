"""Prepared data: samples whose media went through their encoders once, kept in shards.

`modal-core prepare` writes one folder per data source:

- `shard-00000.tar`, ...: WebDataset-style tar files (any WebDataset reader can list
  them); sample `k` of the source is the members `{k:09d}.sample.json` (its segments,
  with each cached item replaced by a member name) and `{k:09d}.m{i}.npy` (the codes or
  features of its i-th item, or a processed payload tensor);
- `prepared.json`: what was prepared (data set, options, split, modalities and a hash of
  each encoder's weights), the complete shards with their size and SHA-256, and the
  sample count once every shard is written.

Shards are written whole and renamed into place, and `prepared.json` is rewritten after
each one, so an interrupted preparation resumes at the first missing shard. The
`prepared` data set reads a folder back map-style: each shard's member offsets are read
from its tar headers the first time the shard is used, and one sample is one seek and
read, so resuming a training run at any step works as for every other data set.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from modal_core.data.segments import Encoded, Media, Sample, Segment, Text
from modal_core.disk import written_whole
from modal_core.errors import DataError

FORMAT = "modal-core-prepared/1"
INDEX_FILE = "prepared.json"
SAMPLE_MEMBER = "sample.json"
SHARD_PATTERN = "shard-{:05d}.tar"
PARTIAL_SUFFIX = ".partial"


def shard_name(number: int) -> str:
    """File name of shard `number`."""
    return SHARD_PATTERN.format(number)


def sample_key(index: int) -> str:
    """Member prefix of sample `index` of the source (sorts in index order)."""
    return f"{index:09d}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (inputs that are not files)."""
    array = tensor.detach().cpu().contiguous().numpy()
    digest = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _npy_bytes(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, tensor.detach().cpu().numpy(), allow_pickle=False)
    return buffer.getvalue()


@dataclass
class PreparedItem:
    """One media item of a sample as it will be stored: a tensor member (`encoded`:
    the encoder's output) or the raw item's path; `checksum` identifies the input."""

    tensor: torch.Tensor | None = None
    encoded: bool = False
    path: str | None = None
    checksum: str | None = None


def sample_members(key: str, sample: Sample, items: dict[int, PreparedItem]) -> dict[str, bytes]:
    """The tar members of one sample; `items` maps the index of each media segment
    to how it is stored (segments not in `items` hold no payload: generation prompts)."""
    segments: list[dict[str, Any]] = []
    members: dict[str, bytes] = {}
    inputs = []
    for position, segment in enumerate(sample.segments):
        if isinstance(segment, Text):
            segments.append({"text": segment.text, "supervised": segment.supervised})
            continue
        entry: dict[str, Any] = {"modality": segment.modality, "supervised": segment.supervised}
        item = items.get(position)
        if item is not None and item.tensor is not None:
            member = f"m{len(members)}.npy"
            members[f"{key}.{member}"] = _npy_bytes(item.tensor)
            entry.update(member=member, encoded=item.encoded)
        elif item is not None:
            entry["path"] = item.path
        if item is not None and item.checksum:
            inputs.append({"segment": position, "sha256": item.checksum, **({"file": item.path} if item.path else {})})
        segments.append(entry)
    record = {"segments": segments, "chat": sample.chat, "source": sample.source, "inputs": inputs}
    return {f"{key}.{SAMPLE_MEMBER}": json.dumps(record).encode(), **members}


def bad_sample_members(key: str, reason: str) -> dict[str, bytes]:
    """The record of a sample that could not be prepared: reading it raises `reason`,
    so `data.on_bad_sample` treats it at training time like the original bad sample."""
    return {f"{key}.{SAMPLE_MEMBER}": json.dumps({"bad": reason}).encode()}


def write_shard(path: Path, samples: list[dict[str, bytes]]) -> dict[str, Any]:
    """Write one shard whole (a `.partial` file renamed into place) and return its
    entry for the index: file name, byte size, SHA-256 and sample count."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    with written_whole(path, partial), partial.open("wb") as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for members in samples:
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), 0o444, 0
                    tar.addfile(info, io.BytesIO(data))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path), "samples": len(samples)}


def write_index(directory: Path, index: dict[str, Any]) -> None:
    """Rewrite `prepared.json` atomically."""
    partial = directory / (INDEX_FILE + PARTIAL_SUFFIX)
    with written_whole(directory / INDEX_FILE, partial):
        partial.write_text(json.dumps(index, indent=1))
    os.replace(partial, directory / INDEX_FILE)


def read_index(directory: Path) -> dict[str, Any]:
    """The `prepared.json` of a prepared folder, with an error naming what is wrong."""
    path = directory / INDEX_FILE
    if not path.is_file():
        raise DataError(f"{directory} is not a prepared data folder ({INDEX_FILE} is missing); write one with `modal-core prepare`")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path}: not a modal-core prepared index (expected format {FORMAT!r})")
    return index


class PreparedDataset(Dataset):
    """A prepared folder read back map-style: item k is sample k of the source, its
    cached items as `Encoded` payloads (raw items keep their path)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        if self.index.get("samples") is None:
            done = sum(shard["samples"] for shard in self.index["shards"])
            raise DataError(
                f"{self.directory}: the preparation is not finished ({done} samples in {len(self.index['shards'])} shards); "
                "run the same `modal-core prepare` command again to complete it"
            )
        self.shard_size = int(self.index["shard_size"])
        self.shards = self.index["shards"]
        for shard in self.shards:
            path = self.directory / shard["file"]
            if not path.is_file() or path.stat().st_size != shard["bytes"]:
                raise DataError(f"{path}: missing or not the size {INDEX_FILE} records ({shard['bytes']} bytes); prepare it again")
        self._offsets: dict[int, dict[str, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return int(self.index["samples"])

    def _members(self, number: int) -> dict[str, tuple[int, int]]:
        """Member name -> (data offset, size) of shard `number`, read once."""
        if number not in self._offsets:
            path = self.directory / self.shards[number]["file"]
            try:
                with tarfile.open(path, mode="r:") as tar:
                    self._offsets[number] = {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}
            except tarfile.TarError as error:
                raise DataError(f"{path}: not a readable tar file ({error})") from error
        return self._offsets[number]

    def _read(self, number: int, name: str) -> bytes:
        path = self.directory / self.shards[number]["file"]
        members = self._members(number)
        if name not in members:
            raise DataError(f"{path}: member {name} is missing")
        offset, size = members[name]
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        if len(data) != size:
            raise DataError(f"{path}: member {name} is truncated ({len(data)} of {size} bytes)")
        return data

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        number, key = index // self.shard_size, sample_key(index)
        shard = self.directory / self.shards[number]["file"]
        try:
            record = json.loads(self._read(number, f"{key}.{SAMPLE_MEMBER}"))
            if "bad" in record:
                raise DataError(f"{shard}: sample {key} was bad when prepared: {record['bad']}")
            segments = tuple(self._segment(number, key, entry) for entry in record["segments"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
            raise DataError(f"{shard}: sample {key} is malformed ({type(error).__name__}: {error})") from error
        return Sample(segments, chat=bool(record.get("chat")), source=f"{shard}:{key}")

    def _segment(self, number: int, key: str, entry: dict[str, Any]) -> Segment:
        if "text" in entry:
            return Text(entry["text"], bool(entry["supervised"]))
        payload: Any = None
        if "member" in entry:
            array = np.load(io.BytesIO(self._read(number, f"{key}.{entry['member']}")), allow_pickle=False)
            tensor = torch.from_numpy(array)
            payload = Encoded(tensor) if entry["encoded"] else tensor
        elif "path" in entry:
            payload = entry["path"]
        return Media(entry["modality"], payload, bool(entry["supervised"]))


def complete_shards(directory: Path, index: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The shards of an index whose files are present with the recorded size."""
    for shard in index.get("shards", []):
        path = directory / shard["file"]
        if path.is_file() and path.stat().st_size == shard["bytes"]:
            yield shard
