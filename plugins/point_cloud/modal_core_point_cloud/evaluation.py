"""The `pointcloud_qa` evaluator: questions about held-out synthetic shapes.

Each held-out scene is asked "what shape is this?" (phrasings rotate) and whether it is
taller than wide, and, with `colours`, its colour. Answers count when they equal the
truth exactly (case and a final full stop ignored). Scenes come from a split of their
own (`evaluation`), so no scene was seen in training or validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from modal_core_point_cloud.synthetic import COLOUR_QUESTIONS, SHAPE_QUESTIONS, SHAPES, TALL_QUESTIONS, render_points, scene_for_index

FIGURE = "pointcloud_answers.png"
ANSWERS = "pointcloud_answers.jsonl"
FIGURE_SCENES = 16
EVAL_SPLIT = "evaluation"
"""Scenes of their own: neither the training split nor the validation split (`heldout`)."""


def _same(answer: str, expected: str) -> bool:
    return answer.strip().rstrip(".").lower() == expected.lower()


def _printable(text: str) -> str:
    """The answer as the figure can draw it (an untrained model may emit control bytes)."""
    return "".join(character if character.isprintable() else "?" for character in text)


def evaluate_pointcloud_qa(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Accuracy of `pipeline`'s answers about held-out shapes (see the module docstring).

    Options: `limit` (scenes, default 200), `seed` (0), `batch_size` (50), `colours`
    (also ask for colours; the model must have been trained with them), `shapes` (the
    shapes the model knows, default all), `progress` (show a bar, default True).
    Writes `pointcloud_answers.png` (the first scenes with questions, answers and
    truth) and `pointcloud_answers.jsonl` (every answer) under `out_dir`.
    """
    from modal_core_point_cloud.render import save_point_cloud_grid

    limit, seed = int(options.get("limit") or 200), int(options.get("seed") or 0)
    batch_size = int(options.get("batch_size") or 50)
    colours = str(options.get("colours", False)).lower() in ("1", "true", "yes")  # `-o colours=true` arrives as text
    shapes = tuple(options.get("shapes") or SHAPES)
    modality = pipeline.modality("input", keyword="points")
    num_points = getattr(pipeline.modalities[modality].processor, "num_points", 1024)

    items = []  # (kind, scene index, question, expected)
    scenes = [scene_for_index(index, seed, EVAL_SPLIT, shapes=shapes) for index in range(limit)]
    for index, scene in enumerate(scenes):
        items.append(("shape", index, SHAPE_QUESTIONS[index % len(SHAPE_QUESTIONS)], scene.shape))
        items.append(("tall", index, TALL_QUESTIONS[index % len(TALL_QUESTIONS)], "yes" if scene.tall else "no"))
        if colours:
            items.append(("colour", index, COLOUR_QUESTIONS[0], scene.colour))
    clouds = [render_points(scene, num_points) for scene in scenes]

    answers: list[str] = []
    starts = range(0, len(items), batch_size)
    for start in tqdm(starts, desc="pointcloud_qa", disable=not options.get("progress", True)):
        chunk = items[start : start + batch_size]
        questions = [question for _, _, question, _ in chunk]
        answers += pipeline.answer(questions, media={modality: [clouds[index] for _, index, _, _ in chunk]})

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"scenes": limit, "questions": len(items), "shape_chance": 1.0 / len(shapes)}
    kinds = ["shape", "tall"] + (["colour"] if colours else [])
    for kind in kinds:
        scored = [_same(answer, item[3]) for item, answer in zip(items, answers) if item[0] == kind]
        metrics[f"{kind}_accuracy"] = sum(scored) / len(scored)
    metrics["shape_accuracy_by_shape"] = {
        shape: sum(_same(answer, shape) for item, answer in zip(items, answers) if item[0] == "shape" and item[3] == shape)
        / max(1, sum(item[0] == "shape" and item[3] == shape for item in items))
        for shape in shapes
    }
    metrics["accuracy"] = sum(_same(answer, item[3]) for item, answer in zip(items, answers)) / len(items)

    with (out_dir / ANSWERS).open("w") as stream:
        for (kind, index, question, expected), answer in zip(items, answers):
            record = {"scene": index, "kind": kind, "question": question, "answer": answer, "expected": expected}
            stream.write(json.dumps(record) + "\n")
    shown = range(min(FIGURE_SCENES, limit))
    captions = []
    for index in shown:
        lines = [
            f"{question} -> {_printable(answer)}" + ("" if _same(answer, expected) else f" (want {expected})")
            for (kind, scene, question, expected), answer in zip(items, answers)
            if scene == index
        ]
        captions.append("\n".join(lines))
    save_point_cloud_grid([clouds[index] for index in shown], captions, out_dir / FIGURE)
    metrics["figure"] = FIGURE
    return metrics
