"""Score a trained model on the shapes world: answers on held-out images and
images drawn for prompts, judged by the deterministic `shapes_checker`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from modal_core.evaluation.options import int_option
from modal_core.generation.pipeline import Pipeline
from modal_core_images.evaluation.shapes_checker import judge_caption, judge_prompt
from modal_core_images.processing import save_image_grid
from modal_core_images.shapes import (
    COLOURS,
    SHAPES,
    Scene,
    describe,
    render_scene,
    scene_for_index,
)

DISPLAY_SIZE = 96


@dataclass
class UnderstandingResult:
    """Answer accuracy on colour and shape questions about unseen images."""

    accuracy: float
    total: int
    examples: list[tuple[Image.Image, str, str, str]] = field(repr=False)  # image, question, answer, expected


@dataclass(frozen=True)
class DrawnImage:
    """One generated image, its prompt and the checker's verdict with its reason."""

    image: Image.Image
    prompt: str
    ok: bool
    reason: str


@dataclass
class GenerationResult:
    """Share of generated images the checker finds to show the prompted object(s)."""

    accuracy: float
    two_object_accuracy: float
    total: int
    images: list[DrawnImage] = field(repr=False)


def unambiguous_questions(scene: Scene) -> list[tuple[str, str]]:
    """The colour and shape questions (with answers) the understanding score asks about
    `scene`: an object is named by its shape (or colour) only where no other object shares it."""
    ordered = scene.ordered()
    pairs = []
    for obj in ordered:
        if sum(o.shape == obj.shape for o in ordered) == 1:
            pairs.append((f"what colour is the {obj.shape}?", obj.colour))
        if sum(o.colour == obj.colour for o in ordered) == 1:
            pairs.append((f"what shape is the {obj.colour} object?", obj.shape))
    return pairs


def answer_is_right(answer: str, expected: str) -> bool:
    """Exact match, ignoring surrounding spaces and a final full stop."""
    return answer.strip().rstrip(".") == expected


def evaluate_understanding(
    pipeline: Pipeline, image_size: int, grid: int | None = None, count: int = 200, seed: int = 1234, batch: int = 50
) -> UnderstandingResult:
    """Colour and shape questions about held-out images: two-object scenes whose pair of
    objects never occurs in training, and fresh one-object scenes (`grid` as in training)."""
    rng = random.Random(seed)
    items = []
    index = 0
    while len(items) < count:
        scene = scene_for_index(index, seed, "heldout", image_size=image_size, num_objects=2 if index % 2 else 1, grid=grid)
        index += 1
        candidates = unambiguous_questions(scene)
        if candidates:  # two identical objects leave no unambiguous question
            question, expected = rng.choice(candidates)
            items.append((render_scene(scene), question, expected))
    correct, examples = 0, []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        images = [image for image, _, _ in chunk]
        answers = pipeline.answer([q for _, q, _ in chunk], image=images)
        for (image, question, expected), answer in zip(chunk, answers):
            correct += answer_is_right(answer, expected)
            examples.append((image, question, answer, expected))
    return UnderstandingResult(correct / len(items), len(items), examples)


def evaluate_shapes_understanding(pipeline: Pipeline, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Accuracy on colour and shape questions about held-out shapes images (the quickstart's understanding score).

    Options: `count` questions (default 200), `seed` (1234), `image_size` (32) and `grid`
    (8; 0: off), as the quickstart's images are made. Writes `understanding.png`."""
    grid = int_option(options, "grid", 8, minimum=0)
    result = evaluate_understanding(
        pipeline,
        int_option(options, "image_size", 32, minimum=1),
        grid or None,
        count=int_option(options, "count", 200, minimum=1),
        seed=int_option(options, "seed", 1234),
    )
    save_understanding_grid(result, Path(out_dir) / "understanding.png")
    return {"accuracy": result.accuracy, "questions": result.total}


def evaluate_generation(
    pipeline: Pipeline,
    per_prompt: int = 2,
    seed: int = 0,
    two_object_prompts: int = 10,
    decoding: str = "ar",
    **settings: Any,
) -> GenerationResult:
    """Draw `per_prompt` images for every "a <colour> <shape>" prompt and for some
    held-out two-object captions (decoded with `decoding`); the checker judges each
    image. `settings`: `Pipeline.generate`'s guidance and sampling (cfg, cfg_schedule,
    cfg_plausibility, temperature, top_k, top_p); those not given are the model's."""
    single = [describe(colour, shape) for colour in COLOURS for shape in SHAPES]
    pairs = [scene_for_index(i, seed, "heldout", num_objects=2) for i in range(two_object_prompts)]
    two = [" left of ".join(describe(o.colour, o.shape) for o in scene.ordered()) for scene in pairs]
    outputs = pipeline.generate(single + two, n=per_prompt, seed=seed, decoding=decoding, **settings)
    images, single_ok, two_ok = [], 0, 0
    for prompt, drawn in zip(single + two, outputs):
        for image in drawn:
            if prompt in single:
                colour, shape = prompt.split()[1:]
                verdict = judge_prompt(image, colour, shape)
                single_ok += verdict.ok
            else:
                verdict = judge_caption(image, prompt)
                two_ok += verdict.ok
            images.append(DrawnImage(image, prompt, verdict.ok, verdict.reason))
    return GenerationResult(single_ok / (len(single) * per_prompt), two_ok / max(1, len(two) * per_prompt), len(images), images)


def _enlarge(image: Image.Image) -> Image.Image:
    return image.resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.NEAREST)


def save_generation_grid(result: GenerationResult, path: Path, columns: int = 8) -> None:
    """PNG grid of the generated images, each captioned with its prompt and verdict."""
    save_image_grid(
        [_enlarge(drawn.image) for drawn in result.images],
        path,
        columns=columns,
        captions=[f"{'OK' if drawn.ok else 'x'} {drawn.prompt}" for drawn in result.images],
    )


def save_understanding_grid(result: UnderstandingResult, path: Path, count: int = 24, columns: int = 6) -> None:
    """PNG grid of held-out images with question, the model's answer and the truth."""
    chosen = result.examples[:count]
    save_image_grid(
        [_enlarge(image) for image, _, _, _ in chosen],
        path,
        columns=columns,
        captions=[f"{q} -> {a} ({'OK' if answer_is_right(a, e) else 'want ' + e})" for _, q, a, e in chosen],
    )
