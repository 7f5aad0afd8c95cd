"""Each scoring protocol reproduces its reference exactly, on tricky cases scored once by
the reference code itself (the fixtures name the commit that was run; the references are
not imported here). The suites are driven end to end with a fake model that gives the
fixture's answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from modal_core.errors import EvaluationError
from modal_core.evaluation.choice_metrics import CHOICE_REFERENCES, POPE_REFERENCE, extract_choice, option_letters
from modal_core.evaluation.vqa_metrics import VQA_REFERENCES, vqa_soft_accuracy
from modal_core_images.evaluation.understanding_suites import evaluate_multiple_choice, evaluate_pope, evaluate_vqa

from .fakes import FakePipeline

FIXTURES = Path(__file__).parent / "fixtures"
VQA = json.loads((FIXTURES / "vqav2_protocols.json").read_text())
CHOICES = json.loads((FIXTURES / "vlmevalkit_exact_matching.json").read_text())
POPE = json.loads((FIXTURES / "pope_reference.json").read_text())


def _jsonl(folder: Path, name: str, records: list[dict]) -> Path:
    Image.new("RGB", (8, 8), (10, 200, 10)).save(folder / "a.png")
    path = folder / name
    path.write_text("".join(json.dumps({"image": "a.png", **record}) + "\n" for record in records))
    return path


def _commit(reference: str) -> str:
    return reference.split("@")[1].split()[0]


def test_fixtures_name_the_references_the_code_cites():
    assert _commit(VQA["references"]["official"]) == _commit(VQA_REFERENCES["official"])
    assert _commit(VQA["references"]["lmms-eval"]) == _commit(VQA_REFERENCES["lmms-eval"])
    assert _commit(CHOICES["reference"]) == _commit(CHOICE_REFERENCES["vlmevalkit-exact"])
    assert _commit(POPE["reference"]) == _commit(POPE_REFERENCE)


@pytest.mark.parametrize("protocol", ["official", "lmms-eval"])
@pytest.mark.parametrize("item", VQA["items"], ids=lambda item: item["id"])
def test_vqa_item_scores_equal_the_reference(protocol, item):
    assert vqa_soft_accuracy(item["prediction"], item["answers"], protocol) == pytest.approx(item[protocol], abs=1e-12)


@pytest.mark.parametrize("protocol", ["official", "lmms-eval"])
def test_vqa_suite_accuracy_equals_the_reference(tmp_path, protocol):
    records = [{"question_id": item["id"], "question": item["id"], "answers": item["answers"]} for item in VQA["items"]]
    data = _jsonl(tmp_path, "vqa.jsonl", records)
    predictions = {item["id"]: item["prediction"] for item in VQA["items"]}
    pipeline = FakePipeline(answer=lambda question, image: predictions[question])
    options = {"data": str(data), "protocol": None if protocol == "official" else protocol}  # official is the default
    metrics = evaluate_vqa(pipeline, options, tmp_path / protocol)
    assert metrics["vqa_accuracy"] == pytest.approx(VQA["mean"][protocol], abs=1e-12)
    assert metrics["protocol"]["protocol"] == protocol and metrics["protocol"]["reference"] == VQA_REFERENCES[protocol]


@pytest.mark.parametrize("item", CHOICES["items"], ids=lambda item: item["id"])
def test_choice_extraction_equals_vlmevalkit_exact_matching(item):
    letters = option_letters(len(item["options"]))
    reference = item["vlmevalkit-exact"]
    expected = reference if reference and reference in letters else None  # VLMEvalKit's "Z" (no answer) is never right
    assert extract_choice(item["prediction"], item["options"]) == expected


def test_circular_accuracy_equals_vlmevalkit(tmp_path):
    questions = CHOICES["circular"]
    records = [{"id": q["id"], "question": q["id"], "options": q["options"], "answer": q["answer_index"]} for q in questions]
    for record in records:
        record["answer"] = record["options"][record["answer"]]
    data = _jsonl(tmp_path, "mc.jsonl", records)
    predictions = {(q["id"], tuple(r["options"])): r["prediction"] for q in questions for r in q["rotations"]}

    def answer(prompt: str, image: str) -> str:
        lines = prompt.splitlines()
        return predictions[(lines[0], tuple(line[3:] for line in lines[1:-1]))]

    metrics = evaluate_multiple_choice(FakePipeline(answer=answer), {"data": str(data)}, tmp_path / "exact")
    assert metrics["accuracy"] == pytest.approx(CHOICES["circular_accuracy"])
    assert metrics["protocol"]["protocol"] == "vlmevalkit-exact" and metrics["protocol"]["notes"] == {"circular": True}
    lenient = evaluate_multiple_choice(FakePipeline(answer=answer), {"data": str(data), "protocol": "lenient"}, tmp_path / "lenient")
    assert lenient["accuracy"] > metrics["accuracy"]  # the lenient reading forgives what VLMEvalKit does not


def test_pope_suite_equals_the_reference_script(tmp_path):
    items = POPE["items"]
    data = _jsonl(tmp_path, "pope.jsonl", [{"question_id": str(i), "question": str(i), "label": x["label"]} for i, x in enumerate(items)])
    pipeline = FakePipeline(answer=lambda question, image: items[int(question)]["prediction"])
    metrics = evaluate_pope(pipeline, {"data": str(data)}, tmp_path / "out")
    assert {name: metrics[name] for name in POPE["metrics"]} == pytest.approx(POPE["metrics"], abs=1e-12)
    records = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert [r["parsed"] for r in records] == [x["parsed"] for x in items]


def test_an_unknown_protocol_is_refused_by_name(tmp_path):
    data = _jsonl(tmp_path, "vqa.jsonl", [{"question": "q", "answers": ["a"]}])
    with pytest.raises(EvaluationError, match="option protocol: expected one of official, lmms-eval, got 'vlmevalkit'"):
        evaluate_vqa(FakePipeline(answer=lambda q, i: "a"), {"data": str(data), "protocol": "vlmevalkit"}, tmp_path / "out")
