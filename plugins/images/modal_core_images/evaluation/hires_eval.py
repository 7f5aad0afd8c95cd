"""Held-out accuracy on the high-resolution shapes task (`hires_shapes`).

    python -m modal_core_images.evaluation.hires_eval RUN_OR_CHECKPOINT [--count 200] [--out DIR]

prints the exact-match accuracy of greedy answers, per question and overall, as JSON;
with `--out`, also writes `metrics.json` and `answers.png` (the first 16 answers, each
under its image, scaled up 4x) there.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from modal_core.reporting import write_json
from modal_core_images.hires_shapes import hires_scene, render_hires
from modal_core_images.processing import save_image_grid

EXAMPLES = 16


@dataclass(frozen=True)
class HiresAccuracy:
    """Exact-match accuracy of answers, overall and per question."""

    accuracy: float
    by_question: dict[str, float]
    total: int
    examples: list[tuple[Image.Image, str]]
    """(image, "question -> answer (expected)") of the first questions asked."""


def heldout_accuracy(pipeline: Any, count: int = 200, seed: int = 0, batch_size: int = 32) -> HiresAccuracy:
    """Ask both questions about each of the first `count` held-out scenes of `hires_shapes`
    (seed `seed`), one question per prompt, greedily; score the answers by exact match."""
    asked = [
        (scene, question, answer)
        for scene in (hires_scene(i, seed, "heldout") for i in range(count))
        for question, answer in scene.questions()
    ]
    correct: dict[str, list[bool]] = {}
    examples = []
    for start in range(0, len(asked), batch_size):
        batch = asked[start : start + batch_size]
        answers = pipeline.answer(
            [question for _, question, _ in batch], image=[render_hires(scene) for scene, _, _ in batch], max_new_tokens=4
        )
        for (scene, question, expected), answer in zip(batch, answers):
            correct.setdefault(question, []).append(answer.strip() == expected)
            if len(examples) < EXAMPLES:
                examples.append((render_hires(scene), f"{question} {answer.strip()} ({'ok' if answer.strip() == expected else expected})"))
    hits = [hit for values in correct.values() for hit in values]
    by_question = {question: sum(values) / len(values) for question, values in correct.items()}
    return HiresAccuracy(sum(hits) / len(hits), by_question, len(hits), examples)


def main(argv: list[str] | None = None) -> None:
    from modal_core.generation.pipeline import Pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint directory or run directory (its last checkpoint)")
    parser.add_argument("--count", type=int, default=200, help="held-out scenes, two questions each (default 200)")
    parser.add_argument("--out", type=Path, help="folder for metrics.json and answers.png")
    args = parser.parse_args(argv)
    result = heldout_accuracy(Pipeline.load(args.checkpoint), args.count)
    metrics = {"accuracy": round(result.accuracy, 3), "by_question": result.by_question, "questions": result.total}
    print(json.dumps(metrics, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(metrics, args.out / "metrics.json")
        images = [image.resize((4 * image.width, 4 * image.height), Image.Resampling.NEAREST) for image, _ in result.examples]
        save_image_grid(images, args.out / "answers.png", columns=4, captions=[caption for _, caption in result.examples])


if __name__ == "__main__":
    main()
