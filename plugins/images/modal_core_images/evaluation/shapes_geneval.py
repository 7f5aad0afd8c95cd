"""GenEval-mini: GenEval's prompt format and rules on the built-in shapes world, with the
deterministic `shapes_checker` in place of GenEval's object detector and colour classifier.

Prompts are shapes captions (the only language a shapes model knows), each with GenEval
metadata; shapes are the classes. Four tags:

- ``colors``: one object, "a red circle": a circle that is red.
- ``counting``: two identical objects, "a red circle left of a red circle": at least two
  circles and not three (GenEval's counting clauses; colour is not checked).
- ``two_object``: two different shapes, "a red circle left of a blue square": both
  objects with their colours (GenEval's two-object clauses plus colour, i.e. its
  colour-attribution rule); their order is not checked.
- ``position``: the same kind of prompt, also requiring the second object to be right of
  the first (GenEval's ``["right of", 0]``).

Two-object prompts come from the held-out pairs of the shapes world by default (pairs
never seen in training), topped up with training pairs when too few are held out.
Detections of one shape are ordered by area, largest first, standing in for GenEval's
detector confidence; an object's box is its centre +- half the side of the square
whose area is its bounding-box area (`area / fill_ratio`).
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

from PIL import Image

from modal_core_images.evaluation.geneval import Detection, judge, read_folder
from modal_core_images.evaluation.shapes_checker import detect_objects
from modal_core_images.shapes import COLOURS, SHAPES, describe, heldout_pairs

TAGS = ("colors", "counting", "two_object", "position")


def _pair_prompt(first: tuple[str, str], second: tuple[str, str]) -> str:
    return f"{describe(*first)} left of {describe(*second)}"


def _pair_key(first: tuple[str, str], second: tuple[str, str]) -> str:
    return "+".join(sorted(f"{colour} {shape}" for colour, shape in (first, second)))


def mini_prompts(per_tag: int = 20, seed: int = 0, split: str = "heldout") -> list[dict[str, Any]]:
    """GenEval-mini prompts with GenEval metadata, tags interleaved (colors, counting,
    two_object, position, colors, ...) so that any prefix covers every tag."""
    rng = random.Random(f"shapes-geneval/{seed}")
    kinds = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    colors = [
        {"tag": "colors", "include": [{"class": shape, "count": 1, "color": colour}], "prompt": describe(colour, shape)}
        for colour, shape in kinds
    ]
    counting = [
        {
            "tag": "counting",
            "include": [{"class": shape, "count": 2}],
            "exclude": [{"class": shape, "count": 3}],
            "prompt": _pair_prompt((colour, shape), (colour, shape)),
        }
        for colour, shape in kinds
    ]
    pairs = [(a, b) for a, b in itertools.permutations(kinds, 2) if a[1] != b[1]]
    held = heldout_pairs()
    preferred = [p for p in pairs if (_pair_key(*p) in held) == (split == "heldout")]
    chosen = set(preferred)
    others = [p for p in pairs if p not in chosen]
    for group in (colors, counting, preferred, others):
        rng.shuffle(group)
    ordered_pairs = preferred + others
    two_object = [
        {
            "tag": "two_object",
            "include": [{"class": a[1], "count": 1, "color": a[0]}, {"class": b[1], "count": 1, "color": b[0]}],
            "prompt": _pair_prompt(a, b),
        }
        for a, b in ordered_pairs[:per_tag]
    ]
    position = [
        {
            "tag": "position",
            "include": [
                {"class": a[1], "count": 1, "color": a[0]},
                {"class": b[1], "count": 1, "color": b[0], "position": ["right of", 0]},
            ],
            "prompt": _pair_prompt(a, b),
        }
        for a, b in ordered_pairs[per_tag : 2 * per_tag]
    ]
    groups = [colors[:per_tag], counting[:per_tag], two_object, position]
    return [prompt for row in itertools.zip_longest(*groups) for prompt in row if prompt is not None]


def shapes_detections(image: Image.Image) -> dict[str, list[Detection]]:
    """The checker's objects as GenEval detections: shape -> detections, largest first."""
    detections: dict[str, list[tuple[int, Detection]]] = {}
    for obj in detect_objects(image):
        if obj.shape == "unknown":
            continue
        half = math.sqrt(obj.area / obj.fill_ratio) / 2
        x, y = obj.centre
        detections.setdefault(obj.shape, []).append((obj.area, Detection((x - half, y - half, x + half, y + half), obj.colour)))
    return {shape: [d for _, d in sorted(found, key=lambda pair: -pair[0])] for shape, found in detections.items()}


def score_image(image: Image.Image, metadata: dict[str, Any]) -> dict[str, Any]:
    """GenEval's verdict on one image of the shapes world."""
    correct, reason = judge(metadata, shapes_detections(image))
    return {"tag": metadata["tag"], "prompt": metadata["prompt"], "correct": correct, "reason": reason}


def score_folder(out_dir: str | Path) -> list[dict[str, Any]]:
    """A GenEval-mini verdict for every sample of a GenEval image folder of shapes images,
    as GenEval's `results.jsonl` records (`filename`, `tag`, `prompt`, `correct`, `reason`)."""
    records = []
    for _, metadata, samples in read_folder(out_dir):
        for sample in samples:
            with Image.open(sample) as image:
                records.append({"filename": str(sample), **score_image(image.convert("RGB"), metadata)})
    return records
