"""Writing small WebDataset shards in tests (webdataset's TarWriter, as img2dataset does)."""

from __future__ import annotations

from pathlib import Path

from webdataset import TarWriter


def write_shards(folder: Path, samples_per_shard: list[list[dict]], name: str = "shard") -> list[Path]:
    """One tar per inner list, named `{name}-00000.tar`, ...; each sample a dict with
    `__key__` and `{extension: bytes | str}` members."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, samples in enumerate(samples_per_shard):
        path = folder / f"{name}-{index:05d}.tar"
        with TarWriter(str(path)) as writer:
            for sample in samples:
                writer.write(sample)
        paths.append(path)
    return paths


def text_shards(folder: Path, shards: int, per_shard: int) -> list[Path]:
    """`shards` shards of `per_shard` text samples; sample `s{shard}k{i}` says `sample s{shard}k{i}`."""
    return write_shards(folder, [[{"__key__": f"s{s}k{i}", "txt": f"sample s{s}k{i}"} for i in range(per_shard)] for s in range(shards)])
