"""The understanding suites end to end with a fake model whose answers are chosen, so the
scores are known: VQA accuracies, circular multiple choice, POPE; resumption and errors."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from modal_core.errors import DataError, EvaluationError
from modal_core.evaluation.items import ITEMS_FILE
from modal_core_images.evaluation.understanding_suites import evaluate_multiple_choice, evaluate_pope, evaluate_vqa

from .fakes import FakePipeline


def _write(folder, name, records):
    (folder / "img").mkdir(exist_ok=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(folder / "img" / "a.png")
    path = folder / name
    path.write_text("".join(json.dumps({"image": "img/a.png", **r}) + "\n" for r in records))
    return path


VQA = [
    {"question_id": 1, "question": "how many?", "answers": ["2"] * 10, "answer_type": "number"},
    {"question_id": 2, "question": "what animal?", "answers": ["cat"] * 3 + ["other"] * 7, "answer_type": "other"},
    {"question_id": 3, "question": "which pet?", "answers": [{"answer": "cat"}] * 10, "answer_type": "other"},
    {"question_id": 4, "question": "is it?", "answer": "yes", "answer_type": "yes/no"},
]
VQA_ANSWERS = {"how many?": "Two", "what animal?": "a cat.", "which pet?": "dog", "is it?": "Yes"}


def test_vqa_scores_known_answers_and_resumes(tmp_path):
    data = _write(tmp_path, "vqa.jsonl", VQA)
    first = FakePipeline(answer=lambda question, image: VQA_ANSWERS[question])
    evaluate_vqa(first, {"data": str(tmp_path), "limit": 2}, tmp_path / "out")
    assert first.questions == ["how many?", "what animal?"]
    second = FakePipeline(answer=lambda question, image: VQA_ANSWERS[question])
    metrics = evaluate_vqa(second, {"data": str(data), "batch_size": 3}, tmp_path / "out")
    assert second.questions == ["which pet?", "is it?"]  # the first two were already scored
    # Per item: 0.0 ("Two" against ten identical "2"s is compared raw, the official rule),
    # 0.9 (3 say "cat"), 0.0, 1.0 (single reference).
    assert metrics["vqa_accuracy"] == pytest.approx((0.0 + 0.9 + 0.0 + 1.0) / 4)
    assert metrics["exact_match"] == pytest.approx(0.5)  # item 2's majority answer is "other"
    assert metrics["vqa_accuracy_by_answer_type"] == pytest.approx({"number": 0.0, "other": 0.45, "yes/no": 1.0})
    assert metrics["count"] == 4
    assert metrics["protocol"]["protocol"] == "official" and metrics["protocol"]["items"] == 4
    again = FakePipeline(answer=lambda question, image: VQA_ANSWERS[question])
    lmms = evaluate_vqa(again, {"data": str(data), "protocol": "lmms-eval"}, tmp_path / "lmms")
    assert lmms["vqa_accuracy"] == pytest.approx((1.0 + 0.9 + 0.0 + 1.0) / 4)  # lmms-eval always normalises
    records = [json.loads(line) for line in (tmp_path / "out" / ITEMS_FILE).read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3", "4"] and records[1]["prediction"] == "a cat."
    assert (tmp_path / "out" / "examples.png").is_file()


def test_multiple_choice_circular_evaluation(tmp_path):
    data = _write(
        tmp_path,
        "mc.jsonl",
        [
            {"id": "sky", "question": "what colour is the sky?", "options": ["red", "blue", "green"], "answer": "B", "category": "colour"},
            {"id": "leaf", "question": "what colour is a leaf?", "options": {"A": "red", "B": "green", "C": "blue"}, "answer": "green"},
        ],
    )

    # Names the sky's colour in words (right in every rotation); says "A" for the leaf,
    # which is right only in the rotation that moves "green" to A.
    def answer(prompt, image):
        return "It is blue." if "sky" in prompt else "A"

    pipeline = FakePipeline(answer=answer)
    metrics = evaluate_multiple_choice(pipeline, {"data": str(data)}, tmp_path / "circular")
    assert metrics["passes"] == 6 and metrics["questions"] == 2
    assert metrics["accuracy"] == 0.5 and metrics["single_pass_accuracy"] == 0.5 and metrics["answered_ratio"] == 1.0
    assert metrics["accuracy_by_category"] == {"colour": 1.0}
    assert pipeline.questions[0] == (
        "what colour is the sky?\nA. red\nB. blue\nC. green\nAnswer with the option's letter from the given choices directly."
    )
    assert pipeline.questions[1].splitlines()[1:4] == ["A. blue", "B. green", "C. red"]
    records = [json.loads(line) for line in (tmp_path / "circular" / ITEMS_FILE).read_text().splitlines()]
    assert [r["correct"] for r in records if r["question_id"] == "leaf"] == [False, True, False]
    single = evaluate_multiple_choice(FakePipeline(answer=answer), {"data": str(data), "circular": "false"}, tmp_path / "single")
    assert single["passes"] == 2 and single["accuracy"] == 0.5


def test_pope_counts_through_the_suite(tmp_path):
    labels = ["yes", "yes", "no", "no", "yes", "no"]
    replies = ["Yes, there is.", "No.", "There is not.", "Yes", "yes", "no"]
    records = [
        {"question_id": i, "text": f"q{i}", "label": label, "category": "random" if i < 3 else "adversarial"}
        for i, label in enumerate(labels)
    ]
    data = _write(tmp_path, "pope.jsonl", records)
    metrics = evaluate_pope(FakePipeline(answer=lambda q, image: replies[int(q[1:])]), {"data": str(data)}, tmp_path / "out")
    # TP: 0, 4; FN: 1; TN: 2, 5; FP: 3.
    assert (metrics["true_positive"], metrics["false_negative"], metrics["true_negative"], metrics["false_positive"]) == (2, 1, 2, 1)
    assert metrics["accuracy"] == pytest.approx(4 / 6) and metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3) and metrics["yes_ratio"] == pytest.approx(0.5)
    assert metrics["by_category"]["random"]["accuracy"] == pytest.approx(2 / 3)
    assert metrics["by_category"]["adversarial"]["false_positive"] == 1


def test_suite_errors_name_the_problem(tmp_path):
    with pytest.raises(EvaluationError, match="suite vqa needs --data"):
        evaluate_vqa(FakePipeline(), {}, tmp_path / "out")
    with pytest.raises(DataError, match="vqa.jsonl"):
        evaluate_vqa(FakePipeline(), {"data": str(tmp_path)}, tmp_path / "out")
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps({"image": "missing.png", "question": "q", "answers": ["a"]}) + "\n")
    with pytest.raises(DataError, match=r"broken.jsonl:1: image file not found: .*missing.png"):
        evaluate_vqa(FakePipeline(), {"data": str(path)}, tmp_path / "out")
    data = _write(tmp_path, "bad_pope.jsonl", [{"question": "q", "label": "maybe"}])
    with pytest.raises(DataError, match="bad_pope.jsonl:1: expected 'label' yes or no"):
        evaluate_pope(FakePipeline(), {"data": str(data)}, tmp_path / "out")
