"""WebDataset tar shards: listing them, and reading each one as a stream of records.

A record is one sample of a shard: the members that share a key (`0001.jpg`,
`0001.txt`) as `{extension: bytes}`. Shards are named by local paths, brace patterns
(`shards-{00000..00999}.tar`) or fsspec URLs (`s3://...`, `https://...`), and read
member by member: a shard is never held in memory whole.

The `webdataset` library expands the patterns and splits a tar stream into records;
fsspec opens the URLs (webdataset's own opener shells out to curl / gsutil instead).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_iterator

from modal_core.errors import DataError

_TEXT_EXTENSIONS = ("txt", "text")


@dataclass(frozen=True)
class ShardRecord:
    """The members of one sample of a shard, keyed by extension (`jpg`, `txt`, `npy`)."""

    shard: str
    key: str
    members: dict[str, bytes]

    @property
    def where(self) -> str:
        """`shard:key`, naming the sample in errors and in the bad-sample log."""
        return f"{self.shard}:{self.key}"

    def value(self, extension: str) -> Any:
        """Member `extension` decoded by its extension: `txt` -> str, `json` -> the parsed
        value, `npy` -> a numpy array; any other extension -> its bytes.

        Written here rather than taken from webdataset's decoders, which also unpickle
        `.pyd` / `.pickle` members: a shard from elsewhere must not run code.

        Raises:
            DataError: the member is missing or cannot be decoded (names shard and member).
        """
        if extension not in self.members:
            raise DataError(f"{self.where}: no .{extension} member; the sample has {sorted(self.members)}")
        data = self.members[extension]
        member = f"{self.where}.{extension}"
        try:
            if extension in _TEXT_EXTENSIONS:
                return data.decode("utf-8")
            if extension == "json":
                return json.loads(data.decode("utf-8"))
            if extension == "npy":
                return np.load(io.BytesIO(data), allow_pickle=False)
        except UnicodeDecodeError as error:
            raise DataError(f"{member}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except json.JSONDecodeError as error:
            raise DataError(f"{member}: not valid JSON ({error.msg})") from None
        except ValueError as error:
            raise DataError(f"{member}: not a numpy .npy array ({error})") from None
        return data


@dataclass(frozen=True)
class BadShard:
    """A shard, or the rest of one, that could not be read; `where` is `shard` or `shard:member`."""

    where: str
    error: DataError


def list_shards(urls: str | Sequence[str], where: str) -> list[str]:
    """The shards named by a pattern, a URL or a list of them, braces expanded, in order.

    Raises:
        DataError: the pattern names no shard, or a local shard does not exist.
    """
    patterns = [urls] if isinstance(urls, str) else list(urls)
    shards = [shard for pattern in patterns for shard in expand_urls(str(pattern))]
    if not shards:
        raise DataError(f"{where}: {urls!r} names no shards")
    for shard in shards:
        filesystem, path = fsspec.core.url_to_fs(shard)
        if filesystem.protocol in ("file", ("file", "local")) and not filesystem.isfile(path):
            raise DataError(f"{where}: shard not found: {shard}")
    return shards


class _MemberName:
    """Remembers the tar member being read (webdataset asks `select_files` before it reads
    each one), so that an error in its data can name it."""

    def __init__(self) -> None:
        self.name = ""

    def __call__(self, name: str) -> bool:
        self.name = name
        return True


class _CountingReader:
    """A file's `read` that keeps the byte count and the last block read. Python's
    `tarfile` ends a stream at a cut-off header without an error; a complete tar is whole
    512-byte blocks ending in zero blocks, which tells it from a truncated one."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.count, self.tail = stream, 0, b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        self.tail = (self.tail + data)[-tarfile.BLOCKSIZE :]
        return data

    def problem(self) -> str | None:
        """Why the bytes read so far are not a complete tar, or None."""
        if self.count % tarfile.BLOCKSIZE:
            return f"{self.count} bytes is not whole 512-byte tar blocks"
        if self.tail.count(0) != len(self.tail):
            return "no end-of-archive marker: the file is cut off"
        return None


def read_shard(shard: str) -> Iterator[ShardRecord | BadShard]:
    """The records of one shard, in tar order. A shard that is not a tar, or a corrupt or
    truncated member, ends the shard with one `BadShard` whose error names the shard and
    member (yielded, not raised, so the stream can go on to the next shard); the sample
    being read when the damage was found is part of what is skipped, as its members may
    be cut off. A tar header garbled in place (not cut off) ends the shard at the last
    intact member, as Python's `tarfile` reads it as the end of the archive."""
    member = _MemberName()
    pending: ShardRecord | None = None  # held back until the next sample (or a clean end) shows it whole
    try:
        with fsspec.open(shard, "rb") as raw:
            stream = _CountingReader(raw)
            try:
                files = tar_file_iterator(stream, select_files=member)
                for record in group_by_keys({**entry, "__url__": shard} for entry in files):
                    if pending is not None:
                        yield pending
                    members = {key: value for key, value in record.items() if not key.startswith("__")}
                    pending = ShardRecord(shard, record["__key__"], members)
                problem = stream.problem()
                if problem is not None:
                    raise tarfile.ReadError(problem)
            except tarfile.ReadError as error:
                if not member.name:
                    yield BadShard(shard, DataError(f"{shard}: not a tar file ({error})"))
                    return
                message = f"{shard}: truncated or corrupt at member {member.name!r} ({error}); the rest of the shard is skipped"
                yield BadShard(f"{shard}:{member.name}", DataError(message))
                return
            except ValueError as error:  # webdataset: a member name repeated within one sample
                message = f"{shard}: member {member.name!r}: {error}; the rest of the shard is skipped"
                yield BadShard(f"{shard}:{member.name}", DataError(message))
                return
    except (OSError, tarfile.TarError) as error:
        yield BadShard(shard, DataError(f"{shard}: could not read the shard ({error})"))
        return
    if pending is not None:
        yield pending
