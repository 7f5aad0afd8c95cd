"""Data-pipeline benchmarks.

Sequence packing: padding fraction and tokens/s with `data.packing` off and on, on the
quickstart stage mixes and on a long-tailed length mix (text whose lengths follow a
log-normal law, as web text and instruction data do), with the ratios packed / unpacked.
Padding is averaged over `--batches` batches of the recipe's data stream; tokens/s
(real tokens) times collation plus the forward and backward pass of the recipe's model
on the same samples packed and unpacked, alternating step by step so that a busy
machine slows both alike. Run: `python benchmarks/data.py packing`; not part of the
test suite.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from modal_core import recipes
from modal_core.assemble import assemble
from modal_core.config.loader import load_recipe
from modal_core.data.shapes_text import text_corpus
from modal_core.plugins import get_plugin_manager
from modal_core.training.run import build_mixture

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="part", required=True)
    packing = parts.add_parser("packing", help="padding fraction and tokens/s without and with sequence packing")
    packing.add_argument("--batches", type=int, default=50, help="batches of each mix whose padding is averaged")
    packing.add_argument("--steps", type=int, default=10, help="timed steps of each mix, packing off and on")
    arguments = parser.parse_args()
    if arguments.part == "packing":
        packing_benchmark(arguments.batches, arguments.steps)


if __name__ == "__main__":
    main()
