"""Where a quickstart model's understanding fails (the numbers of docs/janus.md, "Why
understanding stopped near 0.85").

    .venv/bin/python scripts/understanding_diagnosis.py runs/quickstart/stage3 [--questions 400] [--split heldout]

Prints, as JSON: answers right per kind (one or two objects; colour or shape question),
how many wrong answers name the other object's attribute, and linear probes of the
understanding features (encoder output and adapter output): from the token of the 8 px
patch holding each object's centre in two-object training scenes, the object's shape
and its colour (80 / 20 split, held-out accuracy); and whether the word naming the object
reaches the answer: in two-object scenes, "what colour is the <shape>?" asked about each
object, how often both questions get the same answer, the answer position's attention on
the named object's image tokens against the other object's (per layer, mean over scenes,
the largest gap over heads), and the cosine between its last hidden states for the two
questions; and, as `lookups`, the four ways of naming one object of a two-object scene
and asking for its other attribute (its colour by its shape or by its side, its shape by
its colour or by its side), asked about each object of 200 held-out scenes whose objects
differ in shape and colour: answers right, naming the other object's attribute, or neither.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import torch

from modal_core.data.chat import question_answer
from modal_core.data.segments import Media
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import get_plugin_manager
from modal_core_images.evaluation.shapes_eval import answer_is_right, unambiguous_questions
from modal_core_images.modalities import UNDERSTANDING
from modal_core_images.shapes import COLOURS, SHAPES, Scene, ShapeObject, render_scene, scene_for_index

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


def _patch_tokens(obj: ShapeObject) -> list[int]:
    """Raster indices of the 8 px patches the object's box overlaps."""
    x0, y0 = obj.centre[0] - obj.size // 2, obj.centre[1] - obj.size // 2
    per_row = IMAGE_SIZE // PATCH
    rows = range(y0 // PATCH, (y0 + obj.size - 1) // PATCH + 1)
    return [row * per_row + column for row in rows for column in range(x0 // PATCH, (x0 + obj.size - 1) // PATCH + 1)]


def name_steering(pipeline: Pipeline, scenes: int = 150) -> dict:
    """Does the shape a question names steer the answer? (See the module docstring.)"""
    model, config = pipeline.model, pipeline.model.backbone.config
    previous, config._attn_implementation = config._attn_implementation, "eager"  # SDPA returns no attention weights
    same, gaps, cosines = 0, [], []
    for scene in _distinct_pairs(scenes, seed=99):
        pair = scene.ordered()
        image = render_scene(scene)
        asked = [f"what colour is the {obj.shape}?" for obj in pair]
        answers = pipeline.answer(asked, image=[image, image])
        same += answers[0].strip() == answers[1].strip()
        batch = pipeline.collator.left_padded([question_answer(question, None, [Media(UNDERSTANDING, image)]) for question in asked])
        with torch.no_grad():
            embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
            out = model.backbone.base_model(
                inputs_embeds=embeds,
                attention_mask=batch.attention_mask,
                position_ids=batch.position_ids,
                output_attentions=True,
                output_hidden_states=True,
            )
        image_positions = [row.nonzero().squeeze(-1) for row in batch.media[UNDERSTANDING].mask]
        per_layer = []
        for weights in out.attentions:  # (2, heads, T, T)
            named = [weights[row, :, -1, image_positions[row][_patch_tokens(pair[row])]].sum(-1) for row in (0, 1)]
            other = [weights[row, :, -1, image_positions[row][_patch_tokens(pair[1 - row])]].sum(-1) for row in (0, 1)]
            per_layer.append((named[0] + named[1] - other[0] - other[1]) / 2)  # (heads,)
        gaps.append(torch.stack(per_layer))
        last = out.hidden_states[-1][:, -1]
        cosines.append(float(torch.nn.functional.cosine_similarity(last[0], last[1], dim=0)))
    config._attn_implementation = previous
    mean_gap = torch.stack(gaps).mean(0)  # (layers, heads)
    return {
        "scenes": scenes,
        "same_answer_to_both": round(same / scenes, 4),
        "attention_named_minus_other_largest_per_layer": [round(float(row.abs().max()), 4) for row in mean_gap],
        "last_hidden_cosine": round(sum(cosines) / scenes, 4),
    }


def lookups(pipeline: Pipeline, scenes: int = 200) -> dict:
    """Each object's colour asked by its shape and by its side, and its shape by its
    colour and by its side (see the module docstring), per side of the named object."""
    asked: list[tuple[str, str, str, str, str]] = []  # (lookup, side, question, answer, other object's answer)
    images = []
    for scene in _distinct_pairs(scenes, seed=99):
        pair = scene.ordered()
        for side, obj, other in zip(("left", "right"), pair, pair[::-1]):
            asked += [
                ("colour by shape", side, f"what colour is the {obj.shape}?", obj.colour, other.colour),
                ("colour by side", side, f"what colour is the object on the {side}?", obj.colour, other.colour),
                ("shape by colour", side, f"what shape is the {obj.colour} object?", obj.shape, other.shape),
                ("shape by side", side, f"what is on the {side}?", obj.shape, other.shape),
            ]
            images += [render_scene(scene)] * 4
    answers = pipeline.answer([question for _, _, question, _, _ in asked], image=images)
    counts: Counter = Counter()
    for (lookup, side, _, expected, other), answer in zip(asked, answers):
        said = answer.strip().rstrip(".")
        counts[(lookup, side, "right" if said == expected else "other object's" if said == other else "neither")] += 1
    verdicts = ("right", "other object's", "neither")
    return {
        lookup: {side: {verdict: counts[(lookup, side, verdict)] for verdict in verdicts} for side in ("left", "right")}
        for lookup in ("colour by shape", "colour by side", "shape by colour", "shape by side")
    }


def _distinct_pairs(count: int, seed: int) -> list[Scene]:
    """The first `count` held-out two-object scenes whose objects differ in shape and in colour."""
    chosen, index = [], 0
    while len(chosen) < count:
        scene = scene_for_index(index, seed, "heldout", image_size=IMAGE_SIZE, num_objects=2, grid=GRID)
        index += 1
        left, right = scene.ordered()
        if left.shape != right.shape and left.colour != right.colour:
            chosen.append(scene)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a quickstart model, e.g. runs/quickstart/stage3")
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout", help="pairs of objects never seen in training, or seen")
    args = parser.parse_args()
    pipeline = Pipeline.load(args.checkpoint, plugins=get_plugin_manager())
    report = {
        "answers": answers_by_kind(pipeline, args.questions, args.split),
        "probes": feature_probes(pipeline),
        "naming": name_steering(pipeline),
        "lookups": lookups(pipeline),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
