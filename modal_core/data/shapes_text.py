"""The shapes world in words: scenes as objects and positions, their captions and
questions, and the text corpus behind the built-in `shapes_text` data set.

A scene is one or two flat-coloured shapes on a square canvas. One-object scenes hold a
single shape of 35-50% of the image side anywhere in the image; two-object scenes hold
one shape in each half (30-40% of the side each, at least 4 px apart), so that "left of"
is always unambiguous. Nothing here draws: the pixels (palette, rendering), the held-out
split and the image data sets live in the images plugin (`modal_core_images.shapes`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from modal_core.errors import DataError

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple")

# Every shape fills its square bounding box differently, and the four corner cells of a
# 3x3 grid over the box tell them apart even at ~10 px: a square fills all corners
# (fill 1.0), a circle fills them partly (fill ~0.79), an upward triangle fills only the
# bottom corners (fill 0.5), and a plus-shaped cross with arms about a third wide fills none
# (fill ~0.56). Corner occupancy separates the two shapes whose fill ratios are close.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
POSITIONS: tuple[str, ...] = ("left", "right")

NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two"}
MIN_IMAGE_SIZE = 32


@dataclass(frozen=True)
class ShapeObject:
    """One flat-coloured shape; ``size`` is the side of its square bounding box in pixels."""

    colour: str
    shape: str
    centre: tuple[int, int]
    size: int


@dataclass(frozen=True)
class Scene:
    """One or two objects on a square ``image_size`` x ``image_size`` canvas."""

    objects: tuple[ShapeObject, ...]
    image_size: int

    def ordered(self) -> tuple[ShapeObject, ...]:
        """The objects from left to right."""
        return tuple(sorted(self.objects, key=lambda obj: obj.centre[0]))


def sample_scene(
    rng: random.Random,
    image_size: int = 64,
    num_objects: int | None = None,
    objects: list[tuple[str, str]] | None = None,
    grid: int | None = None,
) -> Scene:
    """Draw a random scene.

    ``objects`` fixes the (colour, shape) of each object, left to right; otherwise they are
    drawn uniformly. ``num_objects`` (1 or 2) defaults to ``len(objects)``, or to a fair
    coin flip when neither is given. Sizes and positions are random, or, with ``grid``,
    snapped: every object box starts on a multiple of ``grid`` pixels, one object is
    ``2 * grid`` wide and each of two objects ``1.5 * grid``. A VQ tokenizer whose code
    cells are ``grid`` pixels then sees only a small, fixed set of patch patterns, which
    a tiny tokenizer learns in minutes.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise DataError(f"image_size {image_size} is too small for the shapes world; use at least {MIN_IMAGE_SIZE}")
    if objects is not None:
        if num_objects is not None and num_objects != len(objects):
            raise DataError(f"num_objects={num_objects} but {len(objects)} objects were given")
        num_objects = len(objects)
        for colour, shape in objects:
            validate_object(colour, shape)
    elif num_objects is None:
        num_objects = rng.choice((1, 2))
    if num_objects not in (1, 2):
        raise DataError(f"a shapes scene holds 1 or 2 objects, not {num_objects}")
    if objects is None:
        objects = [(rng.choice(COLOURS), rng.choice(SHAPES)) for _ in range(num_objects)]

    if grid is not None:
        return Scene(objects=_snapped(rng, objects, image_size, grid), image_size=image_size)
    if num_objects == 1:
        ((colour, shape),) = objects
        size = rng.randint(round(0.35 * image_size), int(0.5 * image_size))
        centre = _random_centre(rng, size, 0, image_size, image_size)
        placed = (ShapeObject(colour, shape, centre, size),)
    else:
        half = image_size // 2
        # Each object stays inside its own half, at least 4 px apart: far enough that even
        # after blurring two objects of one colour do not merge into one for the checker.
        bounds = ((0, half - 2), (half + 2, image_size))
        placed_objects = []
        for (colour, shape), (x_lo, x_hi) in zip(objects, bounds):
            size = rng.randint(round(0.30 * image_size), int(0.40 * image_size))
            centre = _random_centre(rng, size, x_lo, x_hi, image_size)
            placed_objects.append(ShapeObject(colour, shape, centre, size))
        placed = tuple(placed_objects)
    return Scene(objects=placed, image_size=image_size)


def _snapped(rng: random.Random, objects: list[tuple[str, str]], image_size: int, grid: int) -> tuple[ShapeObject, ...]:
    """Objects whose boxes start on the grid (see `sample_scene`)."""
    cells = image_size // grid
    if cells < 4 or image_size % grid:
        raise DataError(f"grid {grid} must divide image_size {image_size} into at least 4 cells per side")
    size = 2 * grid if len(objects) == 1 else round(1.5 * grid)
    # Two objects: the left one starts in the left half, the right one at the middle, so
    # they are at least grid / 2 pixels apart.
    columns = [range(0, cells - 1)] if len(objects) == 1 else [range(0, cells // 2 - 1), range(cells // 2, cells - 1)]
    placed = []
    for (colour, shape), column_choices in zip(objects, columns):
        x0, y0 = rng.choice(column_choices) * grid, rng.randrange(0, cells - 1) * grid
        placed.append(ShapeObject(colour, shape, (x0 + size // 2, y0 + size // 2), size))
    return tuple(placed)


def _random_centre(rng: random.Random, size: int, x_lo: int, x_hi: int, image_size: int) -> tuple[int, int]:
    """A centre whose box of ``size`` lies in columns [x_lo, x_hi) and one pixel inside the image."""
    # The box starts at centre - size // 2 and spans `size` pixels (see `_draw_object`).
    before, after = size // 2, size - size // 2
    x_lo, x_hi = max(x_lo, 1), min(x_hi, image_size - 1)
    cx = rng.randint(x_lo + before, x_hi - after)
    cy = rng.randint(1 + before, image_size - 1 - after)
    return cx, cy


def validate_object(colour: str, shape: str) -> None:
    """Raise `DataError` unless ``colour`` and ``shape`` belong to the shapes world."""
    if colour not in COLOURS:
        raise DataError(f"unknown colour {colour!r}; expected one of {COLOURS}")
    if shape not in SHAPES:
        raise DataError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def describe(colour: str, shape: str) -> str:
    """The noun phrase for one object, e.g. ``"a red circle"``."""
    return f"a {colour} {shape}"


def caption(scene: Scene, shape_first: bool = False) -> str:
    """``"a red circle"``, or ``"a red circle left of a blue square"`` (left object first).

    With ``shape_first`` each object names its shape before its colour: ``"a circle in
    red left of a square in blue"``: read left to right, each object's shape comes by
    its place and its colour after it, the reverse of the colour-first form (an
    experiment of docs/janus.md, "Why understanding stopped near 0.85")."""
    parts = (f"a {obj.shape} in {obj.colour}" if shape_first else describe(obj.colour, obj.shape) for obj in scene.ordered())
    return " left of ".join(parts)


def questions(scene: Scene) -> list[tuple[str, str]]:
    """Question/answer pairs about ``scene``, each answer a single word.

    A question that names an object by its shape (or colour) is asked only when no other
    object in the scene shares that shape (or colour), so every answer is unambiguous.
    """
    ordered = scene.ordered()
    shape_counts = Counter(obj.shape for obj in ordered)
    colour_counts = Counter(obj.colour for obj in ordered)
    pairs: list[tuple[str, str]] = []
    for obj in ordered:
        if shape_counts[obj.shape] == 1:
            pairs.append((f"what colour is the {obj.shape}?", obj.colour))
        if colour_counts[obj.colour] == 1:
            pairs.append((f"what shape is the {obj.colour} object?", obj.shape))
    if len(ordered) == 2:
        for position, obj in zip(POSITIONS, ordered):
            pairs.append((f"what is on the {position}?", obj.shape))
            pairs.append((f"what colour is the object on the {position}?", obj.colour))
    pairs.append(("how many shapes are there?", NUMBER_WORDS[len(ordered)]))
    return pairs


# Everyday facts give the tiny language model some text beyond scene descriptions.
_WORLD_FACTS: tuple[str, ...] = (
    "the sky is blue.",
    "the sea is blue.",
    "grass is green.",
    "a leaf is green.",
    "the sun is yellow.",
    "a lemon is yellow.",
    "a banana is yellow.",
    "a tomato is red.",
    "a strawberry is red.",
    "a plum is purple.",
    "grapes are purple.",
    "red and blue make purple.",
    "blue and yellow make green.",
    "a circle is round.",
    "a wheel is shaped like a circle.",
    "a square has four equal sides.",
    "a window is often a square.",
    "a triangle has three sides.",
    "a roof often looks like a triangle.",
    "a cross has four arms.",
    "a plus sign looks like a cross.",
    "one and one make two.",
)


def _corpus_sentence(rng: random.Random) -> str:
    """One sentence of one of five kinds: fact, caption, question, answer, or statement."""
    kind = rng.randrange(5)
    if kind == 0:
        return rng.choice(_WORLD_FACTS)
    scene = sample_scene(rng, image_size=MIN_IMAGE_SIZE)
    if kind == 1:
        return rng.choice(("", "the picture shows ", "here is ", "i see ")) + caption(scene) + "."
    question, answer = rng.choice(questions(scene))
    if kind == 2:
        return f"{question} {answer}."
    if kind == 3:
        return f"{question} the answer is {answer}."
    # Statements restate the scene's unambiguous questions, so they are true as worded.
    ordered = scene.ordered()
    obj = rng.choice(ordered)
    statements = [f"there {'is one shape' if len(ordered) == 1 else 'are two shapes'}."]
    if sum(other.shape == obj.shape for other in ordered) == 1:
        statements.append(f"the {obj.shape} is {obj.colour}.")
    if sum(other.colour == obj.colour for other in ordered) == 1:
        statements.append(f"the {obj.colour} object is {describe(obj.colour, obj.shape)}.")
    if len(ordered) == 2:
        position = POSITIONS[ordered.index(obj)]
        statements.append(f"{describe(obj.colour, obj.shape)} is on the {position}.")
    return rng.choice(statements)


def text_corpus(num_sentences: int, seed: int) -> list[str]:
    """``num_sentences`` lower-case English sentences about the shapes world, fixed by ``seed``.

    The mix of everyday facts, captions, and questions with their answers uses every word
    that `caption` and `questions` can produce; a few hundred sentences cover them all.
    """
    rng = random.Random(f"shapes-corpus/{seed}")
    return [_corpus_sentence(rng) for _ in range(num_sentences)]
