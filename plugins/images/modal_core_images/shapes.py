"""The shapes world's pixels and splits: the palette, rendering, and the held-out split
of two-object combinations; scenes, captions and questions come from the core's
`modal_core.data.shapes_text` and are re-exported here, so image code has the whole world
in one import.

Scenes are rendered with Pillow without antialiasing on a plain light-grey background,
so that every object pixel carries its exact palette colour.

Held-out split. Generalisation is measured on *combinations* the model never saw: the
unordered pair of (colour, shape) objects of a two-object scene decides its split, and a
fixed 20% of all such pairs (ranked by SHA-256, so the choice is the same in every process
and Python version) is held out. "a red circle left of a blue square" and "a blue square
left of a red circle" therefore always fall in the same split. Every single object
(colour x shape) is seen in training, both alone and inside training pairs, so one-object
scenes are all "train"; the held-out split serves one-object scenes as fresh random sizes
and positions drawn from its own random state, not as unseen objects.

Everything here is deterministic given its seed: `scene_for_index` derives the random
state from (seed, split, index) alone, so any worker can produce sample ``i`` on its own.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
from collections.abc import Sequence
from typing import Literal

from PIL import Image, ImageDraw

from modal_core.data.shapes_text import (
    COLOURS,
    MIN_IMAGE_SIZE,
    NUMBER_WORDS,
    POSITIONS,
    SHAPES,
    Scene,
    ShapeObject,
    caption,
    describe,
    questions,
    sample_scene,
    text_corpus,
    validate_object,
)
from modal_core.errors import DataError

__all__ = [
    "BACKGROUND",
    "COLOURS",
    "MIN_IMAGE_SIZE",
    "NUMBER_WORDS",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SPLITS",
    "Scene",
    "ShapeObject",
    "Split",
    "caption",
    "describe",
    "heldout_pairs",
    "questions",
    "render_objects",
    "render_scene",
    "sample_scene",
    "scene_for_index",
    "split_of",
    "text_corpus",
    "validate_object",
]

# One RGB colour per name of `COLOURS`, in its order. Saturated colours chosen (by maximising a margin over candidates) so that even a pixel
# blended 50/50 with the background stays far closer to its own background-to-colour
# segment than to any other colour's, which is what the checker's segmentation relies on.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 20, 20),
    "green": (30, 170, 50),
    "blue": (20, 90, 230),
    "yellow": (240, 200, 0),
    "purple": (120, 20, 140),
}
BACKGROUND: tuple[int, int, int] = (240, 240, 240)

HELDOUT_FRACTION = 0.2

Split = Literal["train", "heldout"]
SPLITS: tuple[str, ...] = ("train", "heldout")


def render_scene(scene: Scene) -> Image.Image:
    """Draw ``scene`` as an RGB image with hard (non-antialiased) edges."""
    return render_objects(scene.objects, scene.image_size, scene.image_size)


def render_objects(objects: Sequence[ShapeObject], width: int, height: int) -> Image.Image:
    """Draw `objects` on a `width` x `height` canvas of the background colour, hard-edged."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        _draw_object(draw, obj)
    return image


def _draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject) -> None:
    validate_object(obj.colour, obj.shape)
    fill = PALETTE[obj.colour]
    # Pillow boxes are inclusive, so a box of `size` pixels ends at x0 + size - 1.
    x0 = obj.centre[0] - obj.size // 2
    y0 = obj.centre[1] - obj.size // 2
    x1 = x0 + obj.size - 1
    y1 = y0 + obj.size - 1
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
    else:  # cross: two bars, each inset by a third of the box on both sides
        inset = round(obj.size / 3)
        draw.rectangle((x0 + inset, y0, x1 - inset, y1), fill=fill)
        draw.rectangle((x0, y0 + inset, x1, y1 - inset), fill=fill)


ObjectKind = tuple[str, str]


def _pair_key(pair: tuple[ObjectKind, ObjectKind]) -> str:
    """An order-free, process-stable name for an unordered pair of (colour, shape) objects."""
    return "+".join(sorted(f"{colour} {shape}" for colour, shape in pair))


@functools.cache
def heldout_pairs() -> frozenset[str]:
    """The pair keys (see `split_of`) of the two-object combinations held out of training.

    All unordered pairs of (colour, shape) objects, identical pairs included, are ranked by
    the SHA-256 of their key and the first 20% are held out: a fixed choice that does not
    depend on Python's per-process string hashing or on any seed.
    """
    kinds = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    keys = sorted(
        (_pair_key(pair) for pair in itertools.combinations_with_replacement(kinds, 2)),
        key=lambda key: hashlib.sha256(key.encode()).hexdigest(),
    )
    return frozenset(keys[: round(HELDOUT_FRACTION * len(keys))])


def split_of(scene: Scene) -> Split:
    """``"heldout"`` for a two-object scene whose pair of objects is held out, else ``"train"``."""
    if len(scene.objects) == 1:
        return "train"
    first, second = ((obj.colour, obj.shape) for obj in scene.objects)
    return "heldout" if _pair_key((first, second)) in heldout_pairs() else "train"


def scene_for_index(
    index: int,
    seed: int,
    split: str,
    image_size: int = 64,
    num_objects: int | None = None,
    grid: int | None = None,
) -> Scene:
    """The scene numbered ``index`` of ``split``: the same for the same arguments, anywhere.

    Scenes are drawn with `sample_scene` from a random state named by (seed, split, index),
    and two-object scenes are redrawn until their pair belongs to ``split``. One-object
    scenes are all "train" by `split_of`, but the held-out split still serves them when
    asked (``num_objects`` 1 or None): drawn from the held-out random state they are fresh
    sizes and positions of known objects, the only kind of held-out single object there is.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    # A string seed is hashed with SHA-512 by `random.Random`, so it is stable across runs.
    rng = random.Random(f"shapes/{seed}/{split}/{index}")
    # Fixing the count before redrawing keeps one and two objects equally likely in both
    # splits; redrawing it too would favour the count that is never rejected.
    if num_objects is None:
        num_objects = rng.choice((1, 2))
    while True:
        scene = sample_scene(rng, image_size=image_size, num_objects=num_objects, grid=grid)
        if len(scene.objects) == 1 or split_of(scene) == split:
            return scene
