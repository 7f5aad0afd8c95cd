"""GenEval: prompt files, the folder layout its scorer reads, its rules, and GenEval-mini
on rendered shapes with a score worked out by hand."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from modal_core.errors import DataError
from modal_core_images.evaluation import geneval
from modal_core_images.evaluation.generation_suites import evaluate_geneval, evaluate_shapes_geneval
from modal_core_images.evaluation.shapes_geneval import TAGS, mini_prompts, score_folder
from modal_core_images.shapes import render_scene, sample_scene

from .fakes import FakePipeline, draw_caption

# Lines in the format of GenEval's prompts/evaluation_metadata.jsonl.
GENEVAL_LINES = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {
        "tag": "counting",
        "include": [{"class": "clock", "count": 2}],
        "exclude": [{"class": "clock", "count": 3}],
        "prompt": "a photo of two clocks",
    },
    {
        "tag": "position",
        "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["right of", 0]}],
        "prompt": "a photo of a dog left of a cat",
    },
]


def _metadata_file(tmp_path):
    path = tmp_path / "prompts" / "evaluation_metadata.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(line) + "\n" for line in GENEVAL_LINES))
    return path


def test_geneval_suite_writes_the_documented_layout(tmp_path):
    path = _metadata_file(tmp_path)
    out = tmp_path / "out"
    pipeline = FakePipeline(draw=lambda prompt, seed: Image.new("RGB", (32, 32), (seed % 256, 0, 0)))
    metrics = evaluate_geneval(pipeline, {"data": str(path.parent), "n": 3, "seed": 5}, out)
    assert metrics["prompts"] == 3 and metrics["images"] == 9
    assert metrics["prompts_by_tag"] == {"single_object": 1, "counting": 1, "position": 1}
    # The layout, file by file, as GenEval's README documents it.
    for index, line in enumerate(GENEVAL_LINES):
        folder = out / f"{index:05d}"
        assert json.load(open(folder / "metadata.jsonl")) == line  # GenEval reads it with json.load
        assert sorted(p.name for p in (folder / "samples").iterdir()) == ["0000.png", "0001.png", "0002.png"]
        assert (folder / "grid.png").is_file()
    assert geneval.validate_folder(out, GENEVAL_LINES, samples_per_prompt=3) == 3
    # Each prompt has its own seed (seed + index), so a resumed run draws the same images.
    assert pipeline.prompts == [(line["prompt"], 5 + i) for i, line in enumerate(GENEVAL_LINES)]
    with Image.open(out / "00002" / "samples" / "0001.png") as image:
        assert image.getpixel((0, 0)) == ((7 * 100 + 1) % 256, 0, 0)
    # A rerun skips every prompt.
    again = FakePipeline(draw=pipeline._draw)
    assert evaluate_geneval(again, {"data": str(path), "n": 3, "seed": 5}, out) == metrics
    assert again.prompts == []


def test_layout_validation_names_what_is_wrong(tmp_path):
    image = Image.new("RGB", (8, 8))
    for index, line in enumerate(GENEVAL_LINES[:2]):
        geneval.write_prompt(tmp_path, index, line, [image, image])
    assert geneval.validate_folder(tmp_path) == 2
    with pytest.raises(DataError, match="expected 3 samples"):
        geneval.validate_folder(tmp_path, samples_per_prompt=3)
    with pytest.raises(DataError, match="does not hold line 1"):
        geneval.validate_folder(tmp_path, [GENEVAL_LINES[0], GENEVAL_LINES[2]])
    (tmp_path / "00001" / "samples" / "0000.png").unlink()
    with pytest.raises(DataError, match=r"expected 0000.png, 0001.png, \.\.\., found \['0001.png'\]"):
        geneval.validate_folder(tmp_path)
    geneval.write_prompt(tmp_path, 1, GENEVAL_LINES[1], [image])
    geneval.write_prompt(tmp_path, 3, GENEVAL_LINES[2], [image])
    with pytest.raises(DataError, match="expected folder 00002 next"):
        geneval.validate_folder(tmp_path)
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(json.dumps({"tag": "x", "prompt": "p", "include": [{"class": "dog"}]}) + "\n")
    with pytest.raises(DataError, match=r"prompts.jsonl:1: include\[0\] needs a 'class' string and a 'count' integer"):
        geneval.read_prompts(bad)


def test_relative_position_follows_geneval():
    left, right = geneval.Detection((0, 0, 10, 10)), geneval.Detection((20, 0, 30, 10))
    assert geneval.relative_position(left, right) == {"left of"}
    assert geneval.relative_position(right, left) == {"right of"}
    below = geneval.Detection((0, 30, 10, 40))
    assert geneval.relative_position(below, left) == {"below"}
    # Centres 1.5 px apart with boxes 10 px wide: within the 0.1 x (10 + 10) margin, no relation.
    assert geneval.relative_position(geneval.Detection((1.5, 0, 11.5, 10)), left) == set()
    # Diagonal at 45 degrees: offset (12, 12) less the 2 px margin is (10, 10), and
    # 10 / |(12, 12)| = 0.59 > 0.5 on both axes, so GenEval reports both relations.
    assert geneval.relative_position(geneval.Detection((12, 12, 22, 22)), left) == {"right of", "below"}
    # Offset (3, 12): (1, 10) / 12.4 = (0.08, 0.81), below only.
    assert geneval.relative_position(geneval.Detection((3, 12, 13, 22)), left) == {"below"}


def test_geneval_rules_on_hand_made_detections():
    dog, cat = geneval.Detection((0, 0, 10, 10), "red"), geneval.Detection((30, 0, 40, 10), "blue")
    position = GENEVAL_LINES[2]
    assert geneval.judge(position, {"dog": [dog], "cat": [cat]}) == (True, "")
    ok, reason = geneval.judge(position, {"dog": [cat], "cat": [dog]})
    assert not ok and reason == "expected cat right of target, found left of target"
    ok, reason = geneval.judge(position, {"cat": [cat]})
    assert not ok and reason.splitlines() == ["expected dog>=1, found 0", "no target for cat to be right of"]
    counting = GENEVAL_LINES[1]
    assert geneval.judge(counting, {"clock": [dog, cat]})[0]
    assert geneval.judge(counting, {"clock": [dog, cat, dog]}) == (False, "expected clock<3, found 3")
    coloured = {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "blue"}], "prompt": "a blue dog"}
    assert geneval.judge(coloured, {"dog": [cat, dog]})[0]  # the most confident dog is blue
    assert not geneval.judge(coloured, {"dog": [dog, cat]})[0]  # only the first `count` are checked


def _scene_image(objects, seed):
    return render_scene(sample_scene(random.Random(seed), image_size=64, objects=objects))


def test_shapes_geneval_mini_score_of_rendered_images(tmp_path):
    prompts = mini_prompts(per_tag=2, seed=0)
    assert [p["tag"] for p in prompts] == list(TAGS) * 2
    for index, metadata in enumerate(prompts):
        first = [(part.split()[1], part.split()[2]) for part in metadata["prompt"].split(" left of ")]
        correct = _scene_image(first, index)
        tag = metadata["tag"]
        if tag == "colors":  # the wrong colour
            colour, shape = first[0]
            wrong = _scene_image([("green" if colour != "green" else "red", shape)], index)
        elif tag == "counting":  # one object instead of two
            wrong = _scene_image(first[:1], index)
        else:  # objects swapped: still both present, but in the wrong order
            wrong = _scene_image(first[::-1], index)
        geneval.write_prompt(tmp_path, index, metadata, [correct, wrong])
    assert geneval.validate_folder(tmp_path, prompts, samples_per_prompt=2) == 8
    verdicts = score_folder(tmp_path)
    assert [v["correct"] for v in verdicts if v["filename"].endswith("0000.png")] == [True] * 8
    summary = geneval.summarise(verdicts)
    assert summary["tags"] == {"colors": 0.5, "counting": 0.5, "two_object": 1.0, "position": 0.5}
    assert summary["overall"] == pytest.approx(0.625)
    assert summary["correct_prompts"] == 1.0 and summary["images"] == 16


def test_shapes_geneval_suite_with_perfect_and_swapping_drawers(tmp_path):
    perfect = evaluate_shapes_geneval(FakePipeline(draw=draw_caption), {"per_tag": 3, "n": 2}, tmp_path / "perfect")
    assert perfect["tags"] == {"colors": 1.0, "counting": 1.0, "two_object": 1.0, "position": 1.0}
    assert perfect["overall"] == 1.0 and perfect["images"] == 24
    assert (tmp_path / "perfect" / "generations.png").is_file()
    lines = (tmp_path / "perfect" / "geneval_results.jsonl").read_text().splitlines()
    assert len(lines) == 24 and json.loads(lines[0])["correct"] is True
    swapping = FakePipeline(draw=lambda prompt, seed: draw_caption(prompt, seed, swap=True))
    swapped = evaluate_shapes_geneval(swapping, {"per_tag": 3, "n": 1, "limit": 8}, tmp_path / "swapped")
    # Swapping cannot hurt a single object or two identical ones, nor "both present".
    assert swapped["tags"] == {"colors": 1.0, "counting": 1.0, "two_object": 1.0, "position": 0.0}
    assert swapped["prompts"] == 8
