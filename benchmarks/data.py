"""Data-pipeline benchmarks, measured through the one training loop (`modal_core.train`).

Sequence packing: padding fraction and tokens/s (real tokens, data loading included,
as `train/tokens_per_sec` logs them) with `data.packing` off and on, on the quickstart
stage mixes and on a long-tailed length mix (text whose lengths follow a log-normal
law, as web text and instruction data do), with the printed ratios packed / unpacked.
Run: `python benchmarks/data.py packing [--steps 30]`; not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

from modal_core import recipes
from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.data.shapes_text import text_corpus
from modal_core.plugins import get_plugin_manager
from modal_core.training.run import train

QUICKSTART_MIXES = ("quickstart/stage1", "quickstart/stage2", "quickstart/stage3")
SMALL_RUN = [
    "init_from=null",  # the stages start from the previous stage's run; a fresh model times the same
    "tokenizer.train.num_sentences=2000",
    "data.val_samples=0",
    "trainer.checkpoint_every_n_steps=0",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
]


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


def measure(recipe_name: str, overrides: list[str], packing: bool, steps: int, work: Path) -> dict[str, float]:
    """Mean padding fraction and tokens/s of a short training run."""
    plugins = get_plugin_manager()
    name = f"{recipe_name.replace('/', '-')}-{'packed' if packing else 'unpacked'}"
    run = [*SMALL_RUN, *overrides, f"data.packing={str(packing).lower()}", f"trainer.max_steps={steps}", f"output_dir={work / name}"]
    result = train(load_recipe(recipes.find(recipe_name), run, plugins), plugins)
    history = read_history(result.history)
    padding = [r["train/padding_fraction"] for r in history if "train/padding_fraction" in r]
    speed = [r["train/tokens_per_sec"] for r in history if "train/tokens_per_sec" in r]
    return {"padding": statistics.fmean(padding), "tokens_per_sec": statistics.median(speed)}


def packing_benchmark(steps: int) -> None:
    """Print padding fraction and tokens/s without and with packing, and their ratios."""
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        mixes = {name: ["modalities.vq_generation.tokenizer_path=null"] for name in QUICKSTART_MIXES}
        corpus = long_tailed_file(work / "long_tailed.jsonl", 4000, max_words=100)
        mixes["quickstart/text"] = [
            f"data.sources=[{{dataset: jsonl_text, options: {{path: '{corpus}'}}}}]",
            "data.max_length=128",
            "data.on_bad_sample=skip",  # the rare text over 128 tokens is dropped (and logged), as in a real run
        ]
        print(f"{'mix':<32} {'padding off':>11} {'padding on':>11} {'tokens/s off':>13} {'tokens/s on':>12} {'tokens/s on/off':>16}")
        for name, overrides in mixes.items():
            off, on = (measure(name, overrides, packing, steps, work) for packing in (False, True))
            label = "long-tailed text (log-normal)" if name == "quickstart/text" else name
            ratio = on["tokens_per_sec"] / off["tokens_per_sec"]
            print(
                f"{label:<32} {off['padding']:>11.3f} {on['padding']:>11.3f} "
                f"{off['tokens_per_sec']:>13.0f} {on['tokens_per_sec']:>12.0f} {ratio:>15.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="part", required=True)
    packing = parts.add_parser("packing", help="padding fraction and tokens/s without and with sequence packing")
    packing.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    arguments = parser.parse_args()
    if arguments.part == "packing":
        packing_benchmark(arguments.steps)


if __name__ == "__main__":
    main()
