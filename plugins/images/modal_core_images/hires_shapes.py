"""A shapes task where resolution matters: small objects on large, wide or tall canvases.

Each scene puts a triangle, one to three crosses and at most one circle or square, every
object one grid cell wide (`cell`, 8 px by default) and of its own colour, on a canvas
of 6 x 2, 2 x 6 or 4 x 2 cells (48 x 16, 16 x 48, 32 x 16 px). Two questions have one
answer in every scene:

- "what colour is the small triangle?" (one of the five colours);
- "how many crosses are there?" (one, two or three).

A training sample asks both, in random order, as a two-turn conversation (two answers
learned per image); evaluation asks one. Resized to one encoder input of two cells
(16 px), a six-cell side shrinks threefold and an object to under 3 px, too few to tell
a triangle from a cross; cut into two-cell tiles, each object is one patch of a cell.
The held-out split is the same world
drawn from its own random states: fresh placements, colours and counts (see
docs/high-resolution.md for the numbers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from modal_core.data.chat import questions_answers
from modal_core.data.indexed import IndexedDataset
from modal_core.data.segments import Media, Sample
from modal_core.errors import DataError
from modal_core_images.modalities import UNDERSTANDING
from modal_core_images.shapes import COLOURS, SPLITS, ShapeObject, render_objects

CANVASES: tuple[tuple[int, int], ...] = ((6, 2), (2, 6), (4, 2))
"""(width, height) of the canvases in cells, drawn with equal chance."""
CELL = 8
"""Default object side and grid step in pixels."""
COLOUR_QUESTION = "what colour is the small triangle?"
COUNT_QUESTION = "how many crosses are there?"
COUNT_WORDS = ("one", "two", "three")
"""Answers of the count question, by number of crosses."""


@dataclass(frozen=True)
class HiresScene:
    """Objects on a `width` x `height` canvas."""

    width: int
    height: int
    objects: tuple[ShapeObject, ...]

    def questions(self) -> list[tuple[str, str]]:
        """(question, answer) pairs about the scene: the triangle's colour, the crosses' count."""
        triangle = next(obj.colour for obj in self.objects if obj.shape == "triangle")
        crosses = sum(obj.shape == "cross" for obj in self.objects)
        return [(COLOUR_QUESTION, triangle), (COUNT_QUESTION, COUNT_WORDS[crosses - 1])]


def hires_scene(index: int, seed: int, split: str, cell: int = CELL) -> HiresScene:
    """The scene numbered `index` of `split` with objects of `cell` pixels: the same for
    the same arguments, anywhere."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = random.Random(f"hires-shapes/{seed}/{split}/{index}")
    columns, rows = rng.choice(CANVASES)
    cells = [(x * cell, y * cell) for x in range(columns) for y in range(rows)]
    shapes = ["triangle"] + ["cross"] * rng.randint(1, len(COUNT_WORDS)) + [rng.choice(("circle", "square"))] * rng.randint(0, 1)
    colours = rng.sample(COLOURS, len(shapes))
    places = rng.sample(cells, len(shapes))
    objects = tuple(
        ShapeObject(colour, shape, (x + cell // 2, y + cell // 2), cell) for colour, shape, (x, y) in zip(colours, shapes, places)
    )
    return HiresScene(columns * cell, rows * cell, objects)


def render_hires(scene: HiresScene) -> Image.Image:
    """Draw `scene` with hard edges, as `shapes.render_scene` draws the square world."""
    return render_objects(scene.objects, scene.width, scene.height)


def hires_shapes(options: dict, seed: int, split: str) -> IndexedDataset:
    """The high-resolution shapes task as two-question conversations about one image.
    Options: `size` (number of distinct samples, default 20000), `cell` (object side in
    pixels, default 8) and `understanding` (the modality name)."""
    size = int(options.get("size", 20000))
    cell = int(options.get("cell", CELL))
    understanding = options.get("understanding", UNDERSTANDING)

    def make(index: int) -> Sample:
        scene = hires_scene(index, seed, split, cell)
        asked = scene.questions()
        random.Random(f"hires-shapes/{seed}/{split}/{index}/order").shuffle(asked)
        return questions_answers(asked, [Media(understanding, render_hires(scene))])

    return IndexedDataset(size, make, f"hires_shapes/{split}")
