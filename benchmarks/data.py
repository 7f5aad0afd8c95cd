"""Data-pipeline benchmarks; run on demand (`python benchmarks/data.py PART`, or `make
bench` for both), not part of the test suite.

`streaming`: the streaming WebDataset reader against the folder + JSONL loader. Both read
the same JPEGs and captions (`webdataset_image_text` from tar shards, `image_text_jsonl`
from image files named in a JSONL file), through the training data path (the task mix,
a `DataLoader` with 1 and 2 workers), and decode and preprocess every image as the
collator does. Prints samples/s for each and the ratio streaming / folder, for 32 px and
384 px images.

`packing`: padding fraction and tokens/s with `data.packing` off and on, on the
quickstart stage mixes and on a long-tailed length mix (text whose lengths follow a
log-normal law, as web text and instruction data do), with the ratios packed / unpacked.
Padding is averaged over `--batches` batches of the recipe's data stream; tokens/s (real
tokens) times collation plus the forward and backward pass of the recipe's model on the
same samples packed and unpacked, alternating step by step so that a busy machine slows
both alike.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from webdataset import TarWriter

from modal_core import recipes
from modal_core.assemble import assemble
from modal_core.config.loader import load_recipe
from modal_core.data.mixture import MixtureDataset, StreamSampler
from modal_core.data.segments import Media
from modal_core.data.shapes_text import text_corpus
from modal_core.data.streaming import ReaderStream, StreamingMixture
from modal_core.plugins import get_plugin_manager
from modal_core.training.run import build_mixture
from modal_core_images.datasets import image_text_jsonl, webdataset_image_text
from modal_core_images.processing import ImageProcessor
from modal_core_images.shapes import caption, render_scene, scene_for_index

QUICKSTART_MIXES = ("quickstart/stage1", "quickstart/stage2", "quickstart/stage3")
SMALL_RUN = [
    "init_from=null",  # the stages start from the previous stage's run; a fresh model costs the same
    "tokenizer.train.num_sentences=2000",
    "data.val_samples=0",
]
WARM_UP_STEPS = 2


def long_tailed_file(path: Path, count: int, max_words: int, seed: int = 0) -> Path:
    """`count` JSONL texts of shapes-world sentences whose word counts are log-normal
    (median 12 words, a tail to `max_words`)."""
    rng = random.Random(seed)
    words = " ".join(text_corpus(2000, seed)).split()
    with path.open("w") as handle:
        for _ in range(count):
            length = min(max_words, max(1, round(rng.lognormvariate(2.5, 0.9))))
            start = rng.randrange(len(words) - length)
            handle.write(json.dumps({"text": " ".join(words[start : start + length])}) + "\n")
    return path


def measure(recipe_name: str, overrides: list[str], batches: int, steps: int) -> dict[str, dict[str, float]]:
    """Mean padding fraction and median tokens/s of one mix, packing off and on."""
    plugins = get_plugin_manager()
    recipe = load_recipe(recipes.find(recipe_name), [*SMALL_RUN, *overrides], plugins)
    built = assemble(recipe, plugins)
    outputs = frozenset(name for name, runtime in built.modalities.items() if runtime.spec.direction == "output")
    stream = build_mixture(recipe, plugins, outputs, "train", recipe.seed)
    size = recipe.data.batch_size
    samples = [[stream[step * size + i] for i in range(size)] for step in range(max(batches, steps + WARM_UP_STEPS))]
    model, collator = built.model, built.collator
    model.set_trainable(list(recipe.train))
    padding, speeds = {}, {False: [], True: []}
    for packing in (False, True):
        collator.packing = packing
        padding[packing] = statistics.fmean(collator(batch).padding_fraction for batch in samples[:batches])
    for step, batch in enumerate(samples[: steps + WARM_UP_STEPS]):
        for packing in (False, True):
            collator.packing = packing
            start = time.perf_counter()
            collated = collator(batch)
            model(**collated.model_inputs()).loss.backward()
            model.zero_grad(set_to_none=True)
            if step >= WARM_UP_STEPS:
                speeds[packing].append(collated.num_tokens / (time.perf_counter() - start))
    return {
        "on" if packing else "off": {"padding": padding[packing], "tokens_per_sec": statistics.median(speeds[packing])}
        for packing in (False, True)
    }


def packing_benchmark(batches: int, steps: int) -> None:
    """Print padding fraction and tokens/s without and with packing, and their ratios."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        mixes = {name: ["modalities.vq_generation.tokenizer_path=null"] for name in QUICKSTART_MIXES}
        corpus = long_tailed_file(Path(folder) / "long_tailed.jsonl", 4000, max_words=100)
        mixes["quickstart/text"] = [
            f"data.sources=[{{dataset: jsonl_text, options: {{path: '{corpus}'}}}}]",
            "data.max_length=128",
            "data.on_bad_sample=skip",  # the rare text over 128 tokens is dropped, as in a real run
        ]
        print(f"{'mix':<30} {'padding off':>11} {'on':>6} {'on/off':>7} {'tokens/s off':>13} {'on':>6} {'on/off':>7}")
        for name, overrides in mixes.items():
            result = measure(name, overrides, batches, steps)
            off, on = result["off"], result["on"]
            label = "long-tailed text (log-normal)" if name == "quickstart/text" else name
            print(
                f"{label:<30} {off['padding']:>11.3f} {on['padding']:>6.3f} {on['padding'] / off['padding']:>6.2f}x "
                f"{off['tokens_per_sec']:>13.0f} {on['tokens_per_sec']:>6.0f} {on['tokens_per_sec'] / off['tokens_per_sec']:>6.2f}x",
                flush=True,
            )


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


def streaming_measure(size: int, count: int, workers: int, root: Path) -> tuple[float, float]:
    """(folder + JSONL, shards) samples/s for `count` images of `size` px with `workers` workers."""
    jsonl, pattern = write_data(root / f"{size}-{workers}", size, count)
    collate = DecodeImages(size)
    folder = MixtureDataset([("image_text_jsonl", image_text_jsonl({"path": str(jsonl)}, 0, "train"), 1.0)], seed=0)
    folder_loader = DataLoader(folder, batch_size=BATCH, sampler=StreamSampler(), collate_fn=collate, num_workers=workers)
    shards = StreamingMixture([("webdataset_image_text", webdataset_image_text({"path": pattern}, 0, "train"), 1.0)], seed=0)
    shard_loader = DataLoader(ReaderStream(shards, 0, 1, workers, BATCH, 0), batch_size=BATCH, collate_fn=collate, num_workers=workers)
    return samples_per_second(folder_loader, count), samples_per_second(shard_loader, count)


def streaming_benchmark(count: int) -> None:
    torch.set_num_threads(1)  # the workers are the parallelism measured
    print(f"{'image':>6} {'workers':>7} {'folder samples/s':>17} {'shards samples/s':>17} {'shards / folder':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for size, images in ((32, count), (384, count // 4)):
            for workers in (1, 2):
                folder, shards = streaming_measure(size, images, workers, Path(tmp))
                print(f"{size:>4}px {workers:>7} {folder:>17.1f} {shards:>17.1f} {shards / folder:>15.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="part")
    streaming = parts.add_parser("streaming", help="samples/s of the shard reader against the folder loader")
    streaming.add_argument("--count", type=int, default=512, help="images per configuration (default 512)")
    packing = parts.add_parser("packing", help="padding fraction and tokens/s without and with sequence packing")
    packing.add_argument("--batches", type=int, default=50, help="batches of each mix whose padding is averaged")
    packing.add_argument("--steps", type=int, default=10, help="timed steps of each mix, packing off and on")
    arguments = parser.parse_args()
    if arguments.part in (None, "streaming"):
        streaming_benchmark(getattr(arguments, "count", 512))
    if arguments.part in (None, "packing"):
        packing_benchmark(getattr(arguments, "batches", 50), getattr(arguments, "steps", 10))


if __name__ == "__main__":
    main()
