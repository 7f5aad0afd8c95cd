"""Data loading: the streaming WebDataset reader against the folder + JSONL loader.

Both read the same JPEGs and captions (`webdataset_image_text` from tar shards,
`image_text_jsonl` from image files named in a JSONL file), through the training data
path (the task mix, a `DataLoader` with 1 and 2 workers), and decode and preprocess
every image as the collator does. Prints samples/s for each and the ratio
streaming / folder, for 32 px and 384 px images.
Run: `python benchmarks/data.py` (or `make bench`); on demand, not part of the tests.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from webdataset import TarWriter

from modal_core.data.mixture import MixtureDataset, StreamSampler
from modal_core.data.segments import Media
from modal_core.data.streaming import ReaderStream, StreamingMixture
from modal_core_images.datasets import image_text_jsonl, webdataset_image_text
from modal_core_images.processing import ImageProcessor
from modal_core_images.shapes import caption, render_scene, scene_for_index

SHARDS = 8
BATCH = 16


def write_data(root: Path, size: int, count: int) -> tuple[Path, str]:
    """`count` JPEG-caption pairs of `size` px as a folder + JSONL file and as shards."""
    (root / "folder").mkdir(parents=True)
    (root / "shards").mkdir()
    lines, writers = [], [TarWriter(str(root / "shards" / f"shard-{s:05d}.tar")) for s in range(SHARDS)]
    for index in range(count):
        scene = scene_for_index(index, 0, "train", image_size=size)
        buffer = io.BytesIO()
        render_scene(scene).save(buffer, format="JPEG", quality=90)
        (root / "folder" / f"{index:06d}.jpg").write_bytes(buffer.getvalue())
        lines.append(json.dumps({"image": f"{index:06d}.jpg", "caption": caption(scene)}))
        writers[index % SHARDS].write({"__key__": f"{index:06d}", "jpg": buffer.getvalue(), "txt": caption(scene)})
    for writer in writers:
        writer.close()
    (root / "folder" / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return root / "folder" / "pairs.jsonl", str(root / "shards" / f"shard-{{00000..{SHARDS - 1:05d}}}.tar")


class DecodeImages:
    """The collator's image work: decode and preprocess every image of the batch."""

    def __init__(self, size: int) -> None:
        self.processor = ImageProcessor(size=size)

    def __call__(self, samples) -> torch.Tensor:
        return torch.stack([self.processor(s.payload) for sample in samples for s in sample.segments if isinstance(s, Media)])


def samples_per_second(loader: DataLoader, samples: int) -> float:
    """Samples/s over `samples` samples, after one batch per worker of warm-up."""
    batches = iter(loader)
    for _ in range(max(1, loader.num_workers)):
        next(batches)
    start = time.perf_counter()
    for _ in range(samples // BATCH):
        next(batches)
    return samples // BATCH * BATCH / (time.perf_counter() - start)


def measure(size: int, count: int, workers: int, root: Path) -> tuple[float, float]:
    """(folder + JSONL, shards) samples/s for `count` images of `size` px with `workers` workers."""
    jsonl, pattern = write_data(root / f"{size}-{workers}", size, count)
    collate = DecodeImages(size)
    folder = MixtureDataset([("image_text_jsonl", image_text_jsonl({"path": str(jsonl)}, 0, "train"), 1.0)], seed=0)
    folder_loader = DataLoader(folder, batch_size=BATCH, sampler=StreamSampler(), collate_fn=collate, num_workers=workers)
    shards = StreamingMixture([("webdataset_image_text", webdataset_image_text({"path": pattern}, 0, "train"), 1.0)], seed=0)
    shard_loader = DataLoader(ReaderStream(shards, 0, 1, workers, BATCH, 0), batch_size=BATCH, collate_fn=collate, num_workers=workers)
    return samples_per_second(folder_loader, count), samples_per_second(shard_loader, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=512, help="images per configuration (default 512)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the workers are the parallelism measured
    print(f"{'image':>6} {'workers':>7} {'folder samples/s':>17} {'shards samples/s':>17} {'shards / folder':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for size, count in ((32, args.count), (384, args.count // 4)):
            for workers in (1, 2):
                folder, shards = measure(size, count, workers, Path(tmp))
                print(f"{size:>4}px {workers:>7} {folder:>17.1f} {shards:>17.1f} {shards / folder:>15.2f}x")


if __name__ == "__main__":
    main()
