"""Scorers on hand-made ground truth: VQAv2 normalisation and soft accuracy, multiple
choice extraction and rotation, POPE counts."""

from __future__ import annotations

import pytest

from modal_core.errors import DataError
from modal_core.evaluation.choice_metrics import (
    YesNoCounts,
    extract_choice,
    format_choice_prompt,
    pope_answer,
    rotate_options,
)
from modal_core.evaluation.vqa_metrics import exact_match, majority_answer, normalize_answer, vqa_soft_accuracy


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Two", "2"),
        ("The dog.", "dog"),
        ("a Red Circle!", "red circle"),
        ("dont know", "don't know"),
        ("black-and-white", "black and white"),  # a mark inside a word becomes a space
        ("yes, sir", "yes sir"),  # a mark next to a space vanishes
        ("1,000 people", "1000 people"),  # a comma inside a number vanishes
        ("3.5", "3.5"),  # a period before a digit stays
        ("none\tat all\n", "0 at all"),
    ],
)
def test_vqa_normalisation(raw, normalised):
    assert normalize_answer(raw) == normalised


@pytest.mark.parametrize(("matches", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (9, 1.0)])
def test_vqa_soft_accuracy_of_ten_answers(matches, expected):
    answers = ["two"] * matches + ["three"] * (10 - matches)
    # "2" only matches after normalisation ("two" -> "2").
    assert vqa_soft_accuracy("2", answers) == pytest.approx(expected)


def test_vqa_soft_accuracy_leave_one_out_by_hand():
    # Humans: 3 x "cat", 2 x "dog", 5 x "other". Leaving out a "cat" leaves 2 matches (2/3),
    # leaving out anyone else leaves 3 matches (1): (3 * 2/3 + 7 * 1) / 10 = 0.9.
    answers = ["cat"] * 3 + ["dog"] * 2 + ["other"] * 5
    assert vqa_soft_accuracy("Cat.", answers) == pytest.approx(0.9)
    assert vqa_soft_accuracy("dog", answers) == pytest.approx(0.6)
    assert vqa_soft_accuracy("a cat", ["cat"]) == 1.0  # one reference: plain equality
    with pytest.raises(ValueError):
        vqa_soft_accuracy("cat", [])


def test_exact_match_uses_the_majority_answer():
    answers = ["cat", "dog", "Dog", "the dog"]
    assert majority_answer(answers) == "dog"
    assert exact_match("DOG.", answers) == 1.0
    assert exact_match("cat", answers) == 0.0


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("A. red", "A"),
        ("D: purple", "D"),
        ("blue", "B"),  # the option's text
        ("it is green.", "C"),
        ("The answer is D", "D"),  # a lone valid letter
        ("A red circle", "A"),  # not a leading letter ("A" then a word), but the text "red" names option A
        ("red or blue", None),  # two options named
        ("orange", None),
        ("E", None),  # not an option
    ],
)
def test_extract_choice(answer, expected):
    assert extract_choice(answer, ["red", "blue", "green", "purple"], protocol="lenient") == expected


def test_rotation_moves_the_answer_with_its_option():
    options = ["red", "blue", "green"]
    seen = []
    for shift in range(3):
        rotated, right = rotate_options(options, 1, shift)
        assert rotated[right] == "blue"
        seen.append(tuple(rotated))
    assert len(set(seen)) == 3 and {r[0] for r in seen} == set(options)  # every option leads once
    prompt = format_choice_prompt("what colour?", ["red", "blue"], hint="look", instruction="Answer with a letter.")
    assert prompt == "look\nwhat colour?\nA. red\nB. blue\nAnswer with a letter."
    with pytest.raises(DataError, match="2 to 26 options"):
        format_choice_prompt("q", ["only"])


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("Yes, there is.", "yes"),
        ("No.", "no"),
        ("There is not a dog", "no"),
        ("yes. no", "yes"),
        ("I don't know", "yes"),
        ("no, none", "no"),
    ],
)
def test_pope_answer_reading(text, parsed):
    assert pope_answer(text) == parsed


def test_pope_counts_and_metrics_by_hand():
    predictions = ["yes", "yes", "yes", "no", "no", "yes", "no", "no", "no", "yes"]
    labels = ["yes", "yes", "no", "yes", "no", "yes", "no", "no", "yes", "no"]
    counts = YesNoCounts.of(predictions, labels)
    assert (counts.true_positive, counts.false_positive, counts.true_negative, counts.false_negative) == (3, 2, 3, 2)
    metrics = counts.metrics()
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["precision"] == pytest.approx(0.6)
    assert metrics["recall"] == pytest.approx(0.6)
    assert metrics["f1"] == pytest.approx(0.6)
    assert metrics["yes_ratio"] == pytest.approx(0.5)
    skewed = YesNoCounts.of(["yes"] * 4, ["yes", "no", "no", "no"]).metrics()
    assert (skewed["precision"], skewed["recall"], skewed["yes_ratio"]) == (0.25, 1.0, 1.0)
    assert skewed["f1"] == pytest.approx(2 * 0.25 / 1.25)
    with pytest.raises(ValueError, match="'maybe'"):
        YesNoCounts.of(["maybe"], ["yes"])
