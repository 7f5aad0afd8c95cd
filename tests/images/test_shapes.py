"""The shapes world (scenes, captions, questions, splits, corpus) and its checker."""

from __future__ import annotations

import hashlib
import random
import re

import numpy as np
import pytest
from PIL import Image

from modal_core.data.segments import Media, Text
from modal_core.errors import DataError, RecipeError
from modal_core_images.datasets import shapes
from modal_core_images.evaluation.shapes_checker import (
    Verdict,
    check_caption,
    check_prompt,
    detect_objects,
    judge_caption,
    judge_prompt,
    parse_caption,
)
from modal_core_images.shapes import (
    BACKGROUND,
    COLOURS,
    PALETTE,
    SHAPES,
    Scene,
    ShapeObject,
    caption,
    heldout_pairs,
    questions,
    render_scene,
    sample_scene,
    scene_for_index,
    split_of,
    text_corpus,
)


def _scene(*objects: tuple[str, str, int, int, int], image_size: int = 64) -> Scene:
    return Scene(
        objects=tuple(ShapeObject(c, s, (x, y), size) for c, s, x, y, size in objects),
        image_size=image_size,
    )


RED_CIRCLE_LEFT_OF_BLUE_SQUARE = _scene(("blue", "square", 48, 30, 22), ("red", "circle", 15, 34, 20))


def _noisy(image: Image.Image, seed: int) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    pixels += np.random.default_rng(seed).normal(0.0, 10.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _blurred(image: Image.Image) -> Image.Image:
    side = image.size[0]
    half = image.resize((side // 2, side // 2), Image.BILINEAR)
    return half.resize((side, side), Image.BILINEAR)


def _truth(scene: Scene) -> list[tuple[str, str]]:
    return [(obj.colour, obj.shape) for obj in scene.ordered()]


def _found(image: Image.Image) -> list[tuple[str, str]]:
    return [(obj.colour, obj.shape) for obj in detect_objects(image)]


# --- the world ---------------------------------------------------------------------------


def test_rendering_and_sampling_are_deterministic() -> None:
    first = scene_for_index(7, seed=3, split="train", image_size=32)
    assert first == scene_for_index(7, seed=3, split="train", image_size=32)
    assert first != scene_for_index(8, seed=3, split="train", image_size=32)
    assert render_scene(first).tobytes() == render_scene(first).tobytes()
    assert sample_scene(random.Random(5)) == sample_scene(random.Random(5))


def test_rendered_pixels_are_exact_palette_colours() -> None:
    image = render_scene(RED_CIRCLE_LEFT_OF_BLUE_SQUARE)
    assert image.mode == "RGB" and image.size == (64, 64)
    colours = {colour for _, colour in image.getcolors()}
    assert colours == {BACKGROUND, PALETTE["red"], PALETTE["blue"]}
    assert image.getpixel((15, 34)) == PALETTE["red"]
    assert image.getpixel((0, 0)) == BACKGROUND


@pytest.mark.parametrize("image_size", [32, 64, 100])
def test_sampled_scenes_respect_sizes_and_halves(image_size: int) -> None:
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene(rng, image_size=image_size)
        boxes = [(obj.centre[0] - obj.size // 2, obj.centre[1] - obj.size // 2, obj.size) for obj in scene.ordered()]
        for x0, y0, size in boxes:
            assert x0 >= 1 and y0 >= 1 and x0 + size <= image_size - 1 and y0 + size <= image_size - 1
        if len(boxes) == 1:
            assert round(0.35 * image_size) <= boxes[0][2] <= 0.5 * image_size
        else:
            (left_x0, _, left_size), (right_x0, _, right_size) = boxes
            assert all(round(0.3 * image_size) <= s <= 0.4 * image_size for s in (left_size, right_size))
            assert scene.ordered()[0].centre[0] < image_size / 2 < scene.ordered()[1].centre[0]
            assert right_x0 - (left_x0 + left_size) >= 4


def test_sample_scene_honours_requested_objects() -> None:
    scene = sample_scene(random.Random(1), objects=[("green", "cross"), ("yellow", "triangle")])
    assert _truth(scene) == [("green", "cross"), ("yellow", "triangle")]
    assert len(sample_scene(random.Random(1), num_objects=1).objects) == 1
    with pytest.raises(DataError, match="unknown colour"):
        sample_scene(random.Random(1), objects=[("pink", "circle")])
    with pytest.raises(DataError, match="unknown shape"):
        render_scene(_scene(("red", "hexagon", 32, 32, 20)))
    with pytest.raises(DataError, match="at least 32"):
        sample_scene(random.Random(1), image_size=16)


def test_captions() -> None:
    assert caption(_scene(("red", "circle", 32, 32, 25))) == "a red circle"
    # Left object first, whatever the order of `objects`.
    assert caption(RED_CIRCLE_LEFT_OF_BLUE_SQUARE) == "a red circle left of a blue square"
    assert caption(_scene(("red", "circle", 32, 32, 25)), shape_first=True) == "a circle in red"
    assert caption(RED_CIRCLE_LEFT_OF_BLUE_SQUARE, shape_first=True) == "a circle in red left of a square in blue"


def test_questions_for_one_object() -> None:
    assert questions(_scene(("red", "circle", 32, 32, 25))) == [
        ("what colour is the circle?", "red"),
        ("what shape is the red object?", "circle"),
        ("how many shapes are there?", "one"),
    ]


def test_questions_for_two_objects() -> None:
    assert set(questions(RED_CIRCLE_LEFT_OF_BLUE_SQUARE)) == {
        ("what colour is the circle?", "red"),
        ("what shape is the red object?", "circle"),
        ("what colour is the square?", "blue"),
        ("what shape is the blue object?", "square"),
        ("what is on the left?", "circle"),
        ("what colour is the object on the left?", "red"),
        ("what is on the right?", "square"),
        ("what colour is the object on the right?", "blue"),
        ("how many shapes are there?", "two"),
    }


def test_questions_skip_ambiguous_references() -> None:
    same_shape = questions(_scene(("red", "circle", 15, 30, 20), ("blue", "circle", 48, 30, 20)))
    assert not any(q == "what colour is the circle?" for q, _ in same_shape)
    assert ("what shape is the blue object?", "circle") in same_shape
    same_colour = questions(_scene(("red", "circle", 15, 30, 20), ("red", "square", 48, 30, 20)))
    assert not any(q == "what shape is the red object?" for q, _ in same_colour)
    assert ("what colour is the square?", "red") in same_colour
    assert ("what is on the right?", "square") in same_colour
    for scene in (sample_scene(random.Random(i)) for i in range(200)):
        asked = [q for q, _ in questions(scene)]
        assert len(asked) == len(set(asked))
        assert all(" " not in answer for _, answer in questions(scene))


# --- the held-out split ------------------------------------------------------------------


def test_heldout_pairs_are_a_fixed_fifth_of_all_pairs() -> None:
    # 20 objects give 20 * 21 / 2 = 210 unordered pairs, identical pairs included.
    assert len(heldout_pairs()) == 42
    # Pinned: the held-out set must never change silently between versions or processes.
    digest = hashlib.sha256("\n".join(sorted(heldout_pairs())).encode()).hexdigest()
    assert digest == "f094b95e0b25ab0e2ac425addda3edc0443a4a5d18192f776dd6635aedf2e5e7"


def test_split_ignores_order_and_single_objects_are_train() -> None:
    for colour, shape in [(c, s) for c in COLOURS for s in SHAPES]:
        assert split_of(_scene((colour, shape, 32, 32, 25))) == "train"
    held = sorted(heldout_pairs())[0].split("+")
    (c1, s1), (c2, s2) = (name.split() for name in held)
    assert split_of(_scene((c1, s1, 15, 30, 20), (c2, s2, 48, 30, 20))) == "heldout"
    assert split_of(_scene((c2, s2, 15, 30, 20), (c1, s1, 48, 30, 20))) == "heldout"


def test_splits_never_mix() -> None:
    train_pairs, heldout_seen = set(), set()
    for index in range(300):
        train = scene_for_index(index, seed=0, split="train", image_size=32, num_objects=2)
        heldout = scene_for_index(index, seed=0, split="heldout", image_size=32, num_objects=2)
        assert split_of(train) == "train" and split_of(heldout) == "heldout"
        train_pairs.add(frozenset(_truth(train)))
        heldout_seen.add(frozenset(_truth(heldout)))
    assert train_pairs.isdisjoint(heldout_seen)
    # Every single object still appears in training pairs.
    assert {obj for pair in train_pairs for obj in pair} == {(c, s) for c in COLOURS for s in SHAPES}


def test_heldout_split_serves_fresh_single_objects() -> None:
    counts = [len(scene_for_index(i, 0, "heldout", image_size=32).objects) for i in range(200)]
    assert 60 < counts.count(1) < 140
    single = [scene_for_index(i, 0, "heldout", image_size=32, num_objects=1) for i in range(20)]
    assert single != [scene_for_index(i, 0, "train", image_size=32, num_objects=1) for i in range(20)]
    with pytest.raises(DataError, match="unknown split"):
        scene_for_index(0, 0, "val")


# --- the text corpus ---------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text))


def test_text_corpus_is_deterministic_and_covers_the_vocabulary() -> None:
    corpus = text_corpus(300, seed=0)
    assert len(corpus) == 300
    assert corpus == text_corpus(300, seed=0)
    assert corpus != text_corpus(300, seed=1)
    needed: set[str] = set()
    for index in range(300):
        scene = scene_for_index(index, seed=0, split="train", image_size=32)
        needed |= _words(caption(scene))
        for question, answer in questions(scene):
            needed |= _words(question) | {answer}
    for seed in range(3):
        assert needed <= _words(" ".join(text_corpus(300, seed=seed)))


# --- the checker -------------------------------------------------------------------------


@pytest.mark.parametrize("image_size", [32, 64])
def test_checker_recovers_every_clean_scene(image_size: int) -> None:
    rng = random.Random(image_size)
    for _ in range(300):
        scene = sample_scene(rng, image_size=image_size)
        found = detect_objects(render_scene(scene))
        assert [(o.colour, o.shape) for o in found] == _truth(scene), scene
        for obj, detected in zip(scene.ordered(), found):
            assert abs(detected.centre[0] - obj.centre[0]) <= 1.0
            assert abs(detected.centre[1] - obj.centre[1]) <= obj.size / 4


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("degrade", ["noise", "blur"])
def test_checker_survives_mild_degradation(image_size: int, degrade: str) -> None:
    rng = random.Random(1000 + image_size)
    for index in range(300):
        scene = sample_scene(rng, image_size=image_size)
        image = render_scene(scene)
        image = _noisy(image, index) if degrade == "noise" else _blurred(image)
        assert _found(image) == _truth(scene), scene


def test_checker_survives_blur_and_noise_together() -> None:
    rng = random.Random(7)
    for index in range(300):
        scene = sample_scene(rng, image_size=64)
        assert _found(_noisy(_blurred(render_scene(scene)), index)) == _truth(scene), scene


def test_checker_rejects_wrong_colour_and_shape() -> None:
    image = render_scene(_scene(("green", "triangle", 30, 30, 28)))
    assert check_prompt(image, "green", "triangle")
    assert not check_prompt(image, "red", "triangle")
    assert not check_prompt(image, "green", "square")
    with pytest.raises(DataError, match="unknown shape"):
        check_prompt(image, "green", "hexagon")


def test_checker_finds_nothing_in_empty_or_foreign_images() -> None:
    empty = Image.new("RGB", (64, 64), BACKGROUND)
    assert detect_objects(empty) == []
    assert detect_objects(_noisy(empty, 0)) == []
    assert not check_prompt(empty, "red", "circle")
    assert not any(check_caption(empty, "a red circle").values())
    foreign = empty.copy()
    foreign.paste((0, 0, 0), (10, 10, 40, 40))  # black is no palette colour
    foreign.paste(PALETTE["red"], (50, 50, 53, 53))  # a speck, under 2% of the image
    assert detect_objects(foreign) == []


def test_checker_accepts_arrays() -> None:
    image = render_scene(RED_CIRCLE_LEFT_OF_BLUE_SQUARE)
    expected = [("red", "circle"), ("blue", "square")]
    assert _found(np.asarray(image)) == expected
    assert _found(np.asarray(image, dtype=np.float32) / 255.0) == expected
    with pytest.raises(DataError, match="RGB array"):
        detect_objects(np.zeros((8, 8)))


def test_check_caption_judges_each_part() -> None:
    image = render_scene(RED_CIRCLE_LEFT_OF_BLUE_SQUARE)
    assert all(check_caption(image, "a red circle left of a blue square").values())
    swapped = check_caption(image, "a blue square left of a red circle")
    assert swapped["both_ok"] and swapped["count_ok"] and not swapped["position_ok"]
    one = check_caption(image, "a red circle")
    assert one["both_ok"] and one["position_ok"] and not one["count_ok"]
    wrong = check_caption(image, "a red square left of a blue circle")
    assert wrong["colour_ok"] and wrong["shape_ok"] and not wrong["both_ok"] and not wrong["position_ok"]
    missing = check_caption(image, "a green circle")
    assert not missing["colour_ok"] and missing["shape_ok"]


def test_check_caption_counts_repeated_objects() -> None:
    twins = render_scene(_scene(("red", "circle", 15, 30, 20), ("red", "circle", 48, 30, 20)))
    assert all(check_caption(twins, "a red circle left of a red circle").values())
    lone = render_scene(_scene(("red", "circle", 15, 30, 20)))
    lone_result = check_caption(lone, "a red circle left of a red circle")
    assert not lone_result["both_ok"] and not lone_result["position_ok"]


def test_position_ok_follows_rendered_order() -> None:
    rng = random.Random(3)
    for _ in range(50):
        scene = sample_scene(rng, image_size=64, num_objects=2)
        image = render_scene(scene)
        left, right = scene.ordered()
        assert check_caption(image, caption(scene))["position_ok"]
        if (left.colour, left.shape) != (right.colour, right.shape):
            reverse = f"a {right.colour} {right.shape} left of a {left.colour} {left.shape}"
            assert not check_caption(image, reverse)["position_ok"]


def test_verdicts_say_what_was_found_and_what_is_missing() -> None:
    image = render_scene(RED_CIRCLE_LEFT_OF_BLUE_SQUARE)  # red circle centred at (15, 34), blue square at (48, 30)
    found = "found red circle at (14, 34), blue square at (48, 30)"  # centres of mass of the drawn pixels
    assert judge_prompt(image, "red", "circle") == Verdict(True, found)
    assert judge_prompt(image, "red", "square") == Verdict(False, found + "; missing red square")
    assert judge_caption(image, "a red circle left of a blue square") == Verdict(True, found)
    assert judge_caption(image, "a blue square left of a red circle") == Verdict(False, found + "; wrong order")
    assert judge_caption(image, "a green circle left of a blue square") == Verdict(False, found + "; missing green circle")
    bar = Image.new("RGB", (64, 64), BACKGROUND)
    bar.paste(PALETTE["red"], (4, 20, 60, 26))  # 56 x 6: no shape of the world
    assert judge_caption(bar, "a red circle left of a red circle") == Verdict(
        False, "found red blob of no known shape at (32, 22); missing red circle x2"
    )
    assert judge_prompt(Image.new("RGB", (64, 64), BACKGROUND), "red", "circle") == Verdict(False, "found no object; missing red circle")


def test_parse_caption_is_the_inverse_of_caption() -> None:
    assert parse_caption(caption(RED_CIRCLE_LEFT_OF_BLUE_SQUARE)) == [("red", "circle"), ("blue", "square")]
    for bad in ["red circle", "a red circle left of a blue square left of a red circle", "a teal circle"]:
        with pytest.raises(DataError):
            parse_caption(bad)


def test_the_palette_colours_every_colour_of_the_core_world_in_its_order():
    from modal_core.data import shapes_text

    assert tuple(PALETTE) == shapes_text.COLOURS == COLOURS


def test_vqa_samples_ask_several_questions_about_one_image_when_told() -> None:
    options = {"task": "vqa", "image_size": 32, "grid": 8, "num_objects": 2}
    scene = scene_for_index(3, 0, "train", image_size=32, num_objects=2, grid=8)
    chat = shapes({**options, "questions": 3}, 0, "train")[3]
    assert sum(isinstance(segment, Media) for segment in chat.segments) == 1
    asked = re.findall(r"<\|User\|>: (.*?)\n\n<\|Assistant\|>:", "".join(s.text for s in chat.segments if isinstance(s, Text)))
    answers = [s.text.removesuffix("<|end_of_sentence|>").strip() for s in chat.segments if isinstance(s, Text) and s.supervised]
    assert len(asked) == 3 and len(set(asked)) == 3
    assert list(zip(asked, answers)) == random.Random("0/train/3").sample(questions(scene), 3)
    single = shapes(options, 0, "train")[3]  # the default: one question, as before the option existed
    assert sum(s.supervised for s in single.segments if isinstance(s, Text)) == 1
    with pytest.raises(DataError, match="questions: expected at least 1"):
        shapes({**options, "questions": 0}, 0, "train")


def test_caption_samples_name_the_shape_first_when_told() -> None:
    options = {"task": "caption", "image_size": 32, "grid": 8, "num_objects": 2}
    scene = scene_for_index(5, 0, "train", image_size=32, num_objects=2, grid=8)
    for order, instruction, shape_first in (
        ("colour_first", "describe the picture.", False),
        ("shape_first", "name each shape, then its colour.", True),
    ):
        sample = shapes({**options, "order": order}, 0, "train")[5]
        texts = [s for s in sample.segments if isinstance(s, Text)]
        assert f"{instruction}\n\n" in "".join(s.text for s in texts if not s.supervised)
        answer = "".join(s.text for s in texts if s.supervised).removesuffix("<|end_of_sentence|>").strip()
        assert answer == caption(scene, shape_first=shape_first)
    assert shapes(options, 0, "train")[5] == shapes({**options, "order": "colour_first"}, 0, "train")[5]
    with pytest.raises(RecipeError, match="order: expected one of"):
        shapes({**options, "order": "random"}, 0, "train")
