"""A deterministic judge of shapes-world images, for rendered and for generated pictures.

How an image is judged:

1. Segmentation. Every pixel ``p`` is compared with each palette colour ``c`` through the
   segment from the background ``b`` to ``c``: ``alpha`` is the position of ``p`` projected
   on that segment (clamped to [0, 1]) and the residual is its distance from the segment.
   The pixel takes the colour of the nearest segment, and counts as object only when it
   lies at least half way from the background (``alpha >= 0.5``) and within
   `MAX_RESIDUAL` of the segment. Measuring along background-to-colour segments, not to
   the colours themselves, means a blurred edge pixel (a blend of a colour and the
   background) keeps its own colour instead of drifting to whichever palette entry it
   happens to be nearest, and the 0.5 cut puts the edge where the blur's midpoint is.
   Pixels far from every segment (noise, foreign colours) are ignored.
2. Objects. Pixels of one colour that touch (4-connectivity) form a component; components
   smaller than `MIN_AREA_FRACTION` of the image are dropped as specks.
3. Shape. Within a component's bounding box, a 3x3 grid is laid over the box and the
   occupancy of its four corner cells is measured along with the fill ratio (area over box
   area). The shapes differ by construction in exactly these: a square fills everything;
   an upward triangle fills its bottom corners but not its top ones; a plus-shaped cross
   fills no corner and about 5/9 of its box; a circle fills its corners partly and about
   pi/4 of its box. See `classify_shape` for the rules and their margins.
4. Judgement. `check_prompt` asks whether some object has the given colour and shape;
   `check_caption` parses a caption made by `modal_core_images.shapes.caption` and checks
   colours, shapes, whole objects, object count and left/right order separately.
   `judge_prompt` and `judge_caption` give the same verdicts with the reason: every object
   found (colour, shape, centre) and what the prompt asked for that is missing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from modal_core.errors import DataError
from modal_core_images.shapes import BACKGROUND, COLOURS, PALETTE, validate_object

# Well above the residual of sensor-like noise (sigma 10/255 gives ~15) and of mild colour
# drift in generated images, well below the gap between any two colours' segments (>= 70
# at their half-way points, see the palette in `modal_core_images.shapes`).
MAX_RESIDUAL = 60.0
MIN_AREA_FRACTION = 0.02

_BACKGROUND = np.asarray(BACKGROUND, dtype=np.float64)
_DIRECTIONS = np.asarray([PALETTE[c] for c in COLOURS], dtype=np.float64) - _BACKGROUND


@dataclass(frozen=True)
class DetectedObject:
    """One object found in an image; ``centre`` is (x, y) in pixels, ``area`` in pixels."""

    colour: str
    shape: str
    centre: tuple[float, float]
    area: int
    fill_ratio: float


def _as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """``image`` as an H x W x 3 float array in [0, 255]; float arrays are read as [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"expected an H x W x 3 RGB array, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0
    return array.astype(np.float64)


def segment(image: Image.Image | np.ndarray) -> np.ndarray:
    """Per-pixel colour index into `COLOURS`, or -1 for background and unexplained pixels."""
    rgb = _as_rgb(image)
    offsets = rgb.reshape(-1, 3) - _BACKGROUND
    lengths = (_DIRECTIONS**2).sum(axis=1)
    along = offsets @ _DIRECTIONS.T
    # Position along each background-to-colour segment, and squared distance from it.
    alpha = np.clip(along / lengths, 0.0, 1.0)
    residual = (offsets**2).sum(axis=1, keepdims=True) - 2 * alpha * along + alpha**2 * lengths
    nearest = residual.argmin(axis=1)
    pixels = np.arange(len(nearest))
    is_object = (alpha[pixels, nearest] >= 0.5) & (residual[pixels, nearest] <= MAX_RESIDUAL**2)
    return np.where(is_object, nearest, -1).reshape(rgb.shape[:2])


def _components(labels: np.ndarray, min_area: int) -> list[tuple[int, np.ndarray, int, int]]:
    """(colour, mask, top, left) of each 4-connected one-colour component of ``min_area``+
    pixels, in row-major order of their first pixel; ``mask`` covers the bounding box."""
    width = labels.shape[1]
    found = []
    for colour in np.unique(labels[labels >= 0]).tolist():
        numbered, _ = ndimage.label(labels == colour)  # scipy's default 2-D structure is 4-connectivity
        for number, box in enumerate(ndimage.find_objects(numbered), start=1):
            mask = numbered[box] == number
            if int(mask.sum()) < min_area:
                continue
            top, left = box[0].start, box[1].start
            first_pixel = top * width + left + int(mask[0].argmax())  # the box's top row holds the first pixel
            found.append((first_pixel, colour, mask, top, left))
    found.sort(key=lambda item: item[0])
    return [(colour, mask, top, left) for _, colour, mask, top, left in found]


def shape_features(mask: np.ndarray) -> dict[str, float]:
    """Fill ratio, aspect ratio and corner-cell occupancy of a component's bounding-box mask."""
    height, width = mask.shape
    # Assign each pixel, by its centre, to a third of the box along each axis.
    row_third = np.minimum((3 * (np.arange(height) + 0.5) / height).astype(int), 2)
    col_third = np.minimum((3 * (np.arange(width) + 0.5) / width).astype(int), 2)

    def occupancy(row: int, col: int) -> float:
        return float(mask[np.ix_(row_third == row, col_third == col)].mean())

    return {
        "fill": float(mask.mean()),
        "aspect": width / height,
        "top_corners": (occupancy(0, 0) + occupancy(0, 2)) / 2,
        "bottom_corners": (occupancy(2, 0) + occupancy(2, 2)) / 2,
    }


def classify_shape(features: dict[str, float]) -> str:
    """Name the shape a component's `shape_features` describe, or ``"unknown"``.

    Ideal shapes (corners = mean occupancy of the four corner cells of a 3x3 grid over the
    bounding box): square fill 1.0, corners 1.0; circle fill 0.785, corners 0.545; cross
    fill 0.556, corners 0.0; triangle fill 0.5, top corners 0.0, bottom corners 0.75.
    The cuts below were set from the extremes measured on 2,000 random scenes at each of
    32 and 64 pixels, each clean, with Gaussian noise (sigma 10/255), 2x down-up blurred,
    and blurred then noised, with objects down to 10 pixels across (ranges quoted below).
    """
    # Every shape of the world has a square bounding box and fills about 40% of it or more;
    # a blob that does not is something else (a smear or a bar in a generated image).
    if not 2 / 3 <= features["aspect"] <= 3 / 2 or features["fill"] < 0.3:
        return "unknown"
    # Only the upward triangle is top-bottom asymmetric: measured >= 0.55, others <= 0.33.
    if features["bottom_corners"] - features["top_corners"] >= 0.45:
        return "triangle"
    # The symmetric shapes are told apart by how much of their corners they fill; the fill
    # ratio, at a quarter of the weight, widens the margins that blur leaves between them.
    # Measured: cross <= 0.39, circle 0.48-0.83, square >= 1.01 (ideal 0.14, 0.74, 1.25).
    score = (features["top_corners"] + features["bottom_corners"]) / 2 + features["fill"] / 4
    if score < 0.43:
        return "cross"
    if score < 0.92:
        return "circle"
    return "square"


def detect_objects(image: Image.Image | np.ndarray) -> list[DetectedObject]:
    """Every object of a palette colour in ``image``, from left to right."""
    labels = segment(image)
    min_area = max(1, round(MIN_AREA_FRACTION * labels.size))
    objects = []
    for colour, mask, top, left in _components(labels, min_area):
        ys, xs = np.nonzero(mask)
        objects.append(
            DetectedObject(
                colour=COLOURS[colour],
                shape=classify_shape(shape_features(mask)),
                centre=(float(xs.mean()) + left, float(ys.mean()) + top),
                area=int(mask.sum()),
                fill_ratio=float(mask.mean()),
            )
        )
    return sorted(objects, key=lambda obj: obj.centre)


@dataclass(frozen=True)
class Verdict:
    """The checker's judgement of one image and why, e.g. ``"found red square at (8, 8);
    missing red circle"``."""

    ok: bool
    reason: str


def describe_found(objects: list[DetectedObject]) -> str:
    """The objects the checker found, left to right, as "found <colour> <shape> at (x, y), ..."."""
    if not objects:
        return "found no object"
    return "found " + ", ".join(f"{_name(obj)} at ({obj.centre[0]:.0f}, {obj.centre[1]:.0f})" for obj in objects)


def _name(obj: DetectedObject) -> str:
    return f"{obj.colour} {obj.shape}" if obj.shape != "unknown" else f"{obj.colour} blob of no known shape"


def _reason(found: list[DetectedObject], wanted: list[tuple[str, str]], order_checked: bool) -> str:
    missing = Counter(wanted) - Counter((obj.colour, obj.shape) for obj in found)
    parts = [describe_found(found)]
    if missing:
        parts.append("missing " + ", ".join(f"{colour} {shape}" + (f" x{n}" if n > 1 else "") for (colour, shape), n in missing.items()))
    elif order_checked:
        parts.append("wrong order")
    return "; ".join(parts)


def judge_prompt(image: Image.Image | np.ndarray, colour: str, shape: str) -> Verdict:
    """Whether ``image`` holds an object of ``colour`` and ``shape``, with what was found."""
    validate_object(colour, shape)
    found = detect_objects(image)
    ok = any(obj.colour == colour and obj.shape == shape for obj in found)
    return Verdict(ok, _reason(found, [] if ok else [(colour, shape)], order_checked=False))


def check_prompt(image: Image.Image | np.ndarray, colour: str, shape: str) -> bool:
    """Whether ``image`` holds an object of ``colour`` and ``shape``."""
    return judge_prompt(image, colour, shape).ok


def judge_caption(image: Image.Image | np.ndarray, caption: str) -> Verdict:
    """`check_caption`'s ``position_ok`` (every named object, in the named order), with
    what was found, what is missing, or "wrong order" when all objects are there."""
    wanted = parse_caption(caption)
    found = detect_objects(image)
    ok = _caption_checks(wanted, found)["position_ok"]
    return Verdict(ok, _reason(found, wanted, order_checked=not ok))


def check_caption(image: Image.Image | np.ndarray, caption: str) -> dict[str, bool]:
    """Judge ``image`` against a caption made by `modal_core_images.shapes.caption`.

    Returns, each counting repeated objects as often as the caption names them:
    ``colour_ok`` (every named colour is present), ``shape_ok`` (every named shape),
    ``both_ok`` (every named colour-and-shape object), ``count_ok`` (exactly as many
    objects as named), and ``position_ok``: for "X left of Y", whether some detected X lies
    left of a different detected Y; for a one-object caption there is no order to check,
    so it equals ``both_ok``. ``position_ok`` therefore always implies ``both_ok``.
    """
    return _caption_checks(parse_caption(caption), detect_objects(image))


def _caption_checks(wanted: list[tuple[str, str]], found: list[DetectedObject]) -> dict[str, bool]:
    both_ok = _contains(Counter((obj.colour, obj.shape) for obj in found), Counter(wanted))
    if len(wanted) == 2:
        first, second = wanted
        position_ok = any(
            (a.colour, a.shape) == first and (b.colour, b.shape) == second and a.centre[0] < b.centre[0]
            for a in found
            for b in found
            if a is not b
        )
    else:
        position_ok = both_ok
    return {
        "colour_ok": _contains(Counter(obj.colour for obj in found), Counter(c for c, _ in wanted)),
        "shape_ok": _contains(Counter(obj.shape for obj in found), Counter(s for _, s in wanted)),
        "both_ok": both_ok,
        "count_ok": len(found) == len(wanted),
        "position_ok": position_ok,
    }


def parse_caption(caption: str) -> list[tuple[str, str]]:
    """The (colour, shape) objects of a caption, left to right: the inverse of ``caption()``."""
    objects = []
    for phrase in caption.strip().rstrip(".").split(" left of "):
        words = phrase.split()
        if len(words) != 3 or words[0] != "a":
            raise DataError(f"cannot parse {caption!r}: expected 'a <colour> <shape>' phrases")
        validate_object(words[1], words[2])
        objects.append((words[1], words[2]))
    if len(objects) > 2:
        raise DataError(f"cannot parse {caption!r}: a shapes caption names at most two objects")
    return objects


def _contains(have: Counter, need: Counter) -> bool:
    return all(have[key] >= n for key, n in need.items())
