"""Where a quickstart model's understanding fails (the numbers of docs/janus.md, "Why
understanding stops near 0.85").

    .venv/bin/python scripts/understanding_diagnosis.py runs/quickstart/stage3 [--questions 400] [--split heldout]

Prints, as JSON: answers right per kind (one or two objects; colour or shape question),
how many wrong answers name the other object's attribute, and linear probes of the
understanding features (encoder output and adapter output): from the token of the 8 px
patch holding each object's centre in two-object training scenes, the object's shape
and its colour (80 / 20 split, held-out accuracy).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import torch

from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import get_plugin_manager
from modal_core_images.evaluation.shapes_eval import answer_is_right, unambiguous_questions
from modal_core_images.modalities import UNDERSTANDING
from modal_core_images.shapes import COLOURS, SHAPES, Scene, render_scene, scene_for_index

IMAGE_SIZE, GRID, PATCH = 32, 8, 8
PROBE_SCENES = 3000


def answers_by_kind(pipeline: Pipeline, count: int, split: str, seed: int = 1234) -> dict:
    """Right answers per (objects, question kind) over `count` questions about `split`
    scenes, one and two objects alternating, and the wrong answers that name an
    attribute of another object in the scene."""
    rng = random.Random(seed)
    items: list[tuple[Scene, str, str]] = []
    index = 0
    while len(items) < count:
        scene = scene_for_index(index, seed, split, image_size=IMAGE_SIZE, num_objects=1 + index % 2, grid=GRID)
        index += 1
        candidates = unambiguous_questions(scene)
        if candidates:
            items.append((scene, *rng.choice(candidates)))
    answers = pipeline.answer([question for _, question, _ in items], image=[render_scene(scene) for scene, _, _ in items])
    right, total, wrong = Counter(), Counter(), Counter()
    for (scene, question, expected), answer in zip(items, answers):
        attribute = "colour" if question.startswith("what colour") else "shape"
        kind = f"{len(scene.objects)} object(s), {attribute}"
        total[kind] += 1
        if answer_is_right(answer, expected):
            right[kind] += 1
        else:
            named = answer.strip().rstrip(".") in {getattr(obj, attribute) for obj in scene.objects}
            wrong["another object's" if named else "neither object's"] += 1
    return {
        "right": {kind: f"{right[kind]} / {total[kind]}" for kind in sorted(total)},
        "accuracy": round(sum(right.values()) / count, 4),
        "wrong_answers": dict(wrong),
    }


def _probe_accuracy(features: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """Held-out accuracy of a logistic regression (Adam, 400 steps) on the first 80 %."""
    cut = int(0.8 * len(features))
    mean, std = features[:cut].mean(0), features[:cut].std(0) + 1e-6
    features = (features - mean) / std
    weight = torch.zeros(features.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(400):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(features[:cut] @ weight + bias, labels[:cut]) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    return round(float(((features[cut:] @ weight + bias).argmax(1) == labels[cut:]).float().mean()), 4)


def feature_probes(pipeline: Pipeline, scenes: int = PROBE_SCENES) -> dict:
    """Shape and colour of each object of two-object training scenes, read linearly from
    the token of the patch holding its centre, after the encoder and after the adapter."""
    torch.manual_seed(0)
    rows = [scene_for_index(index, 7, "train", image_size=IMAGE_SIZE, num_objects=2, grid=GRID) for index in range(scenes)]
    processor = pipeline.modalities[UNDERSTANDING].processor
    pixels = torch.stack([processor(render_scene(scene)) for scene in rows])
    per_row = IMAGE_SIZE // PATCH
    with torch.no_grad():
        encoded = pipeline.model.encoders[UNDERSTANDING].encode(pixels)
        stages = {"encoder": encoded, "adapter": pipeline.model.adapters[UNDERSTANDING](encoded)}
    report = {}
    for name, tokens in stages.items():
        features, shapes, colours = [], [], []
        for row, scene in enumerate(rows):
            for obj in scene.objects:
                x, y = (min(int(c) // PATCH, per_row - 1) for c in obj.centre)
                features.append(tokens[row, y * per_row + x].float())
                shapes.append(SHAPES.index(obj.shape))
                colours.append(COLOURS.index(obj.colour))
        stacked = torch.stack(features)
        report[name] = {
            "shape": _probe_accuracy(stacked, torch.tensor(shapes), len(SHAPES)),
            "colour": _probe_accuracy(stacked, torch.tensor(colours), len(COLOURS)),
            "objects": len(features),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a quickstart model, e.g. runs/quickstart/stage3")
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout", help="pairs of objects never seen in training, or seen")
    args = parser.parse_args()
    pipeline = Pipeline.load(args.checkpoint, plugins=get_plugin_manager())
    report = {"answers": answers_by_kind(pipeline, args.questions, args.split), "probes": feature_probes(pipeline)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
