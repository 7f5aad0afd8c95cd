"""A stand-in for `modal_core.Pipeline` whose answers and drawings the tests choose, so
suite scores can be checked against numbers worked out by hand."""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image

from modal_core.generation.settings import GenerationSettings
from modal_core_images.evaluation.shapes_checker import parse_caption
from modal_core_images.shapes import render_scene, sample_scene


def draw_caption(caption: str, seed: int, swap: bool = False) -> Image.Image:
    """A clean shapes image of `caption` (its objects left to right, or swapped)."""
    objects = parse_caption(caption)
    if swap:
        objects = objects[::-1]
    return render_scene(sample_scene(random.Random(seed), image_size=64, objects=objects))


class FakePipeline:
    """Answers with `answer(question, image_path)`; draws with `draw(prompt, seed)`."""

    def __init__(self, answer: Callable[[str, str], str] | None = None, draw: Callable[[str, int], Image.Image] | None = None) -> None:
        self._answer, self._draw = answer, draw
        self.questions: list[str] = []
        self.prompts: list[tuple[str, int]] = []

    generation = GenerationSettings()  # Janus's constant guidance, as a recipe without `generation:` gives

    def settings(self, **overrides) -> GenerationSettings:
        return self.generation.with_overrides(**overrides)

    def modality(self, direction: str, name: str | None = None, keyword: str | None = None) -> str:
        return name or ("image_understanding" if direction == "input" else "vq_generation")

    def answer(self, questions, media=None, **options):
        images = media["image_understanding"]
        self.questions += questions
        return [self._answer(question, image) for question, image in zip(questions, images)]

    def generate(self, prompt, n=4, seed=0, **options):
        self.prompts.append((prompt, seed))
        return [[self._draw(prompt, seed * 100 + k) for k in range(n)]]
