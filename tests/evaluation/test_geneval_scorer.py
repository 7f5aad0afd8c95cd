"""`geneval` with a GenEval set-up runs GenEval's two scripts on the folder it wrote and
folds their numbers into the metrics; without one it says what is missing. GenEval's
scripts are stood in for by two that keep its command lines and output formats (the
real ones need mmdet, CLIP weights and a GPU); their judge: an image is right when its
first pixel's red value is below 128."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image

from modal_core.errors import EvaluationError
from modal_core_images.evaluation.generation_suites import evaluate_geneval
from modal_core_images.evaluation.geneval_scorer import DETECTOR

from .fakes import FakePipeline
from .test_geneval import GENEVAL_LINES, _metadata_file

EVALUATE_IMAGES = """
import argparse, json, os, re, sys
from PIL import Image
parser = argparse.ArgumentParser()
parser.add_argument("imagedir"); parser.add_argument("--outfile", default="results.jsonl")
parser.add_argument("--model-config", default=None); parser.add_argument("--model-path", default="./")
parser.add_argument("--options", nargs="*", default=[])
args = parser.parse_args()
open(os.path.join(os.path.dirname(__file__), "argv.json"), "w").write(json.dumps(sys.argv[1:]))
rows = []
for sub in sorted(os.listdir(args.imagedir)):
    folder = os.path.join(args.imagedir, sub)
    if not os.path.isdir(folder) or not sub.isdigit():
        continue
    metadata = json.load(open(os.path.join(folder, "metadata.jsonl")))
    for name in sorted(os.listdir(os.path.join(folder, "samples"))):
        if re.match(r"\\d+\\.png", name):
            path = os.path.join(folder, "samples", name)
            correct = Image.open(path).getpixel((0, 0))[0] < 128
            rows.append({"filename": path, "tag": metadata["tag"], "prompt": metadata["prompt"], "correct": correct,
                         "reason": "", "metadata": json.dumps(metadata), "details": "{}"})
with open(args.outfile, "w") as fp:
    fp.write("".join(json.dumps(row) + "\\n" for row in rows))
"""
SUMMARY_SCORES = """
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
tags = {}
for row in rows:
    tags.setdefault(row["tag"], []).append(row["correct"])
print("Summary")
print(f"Total images: {len(rows)}")
for tag, values in tags.items():
    print(f"{tag:<16} = {sum(values) / len(values):.2%} ({sum(values)} / {len(values)})")
print(f"Overall score (avg. over tasks): {sum(sum(v) / len(v) for v in tags.values()) / len(tags):.5f}")
"""


def _checkout(tmp_path):
    checkout = tmp_path / "geneval"
    (checkout / "evaluation").mkdir(parents=True)
    (checkout / "evaluation" / "evaluate_images.py").write_text(EVALUATE_IMAGES)
    (checkout / "evaluation" / "summary_scores.py").write_text(SUMMARY_SCORES)
    weights = tmp_path / "detector" / f"{DETECTOR}.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    return checkout, weights


def _pipeline():
    return FakePipeline(draw=lambda prompt, seed: Image.new("RGB", (32, 32), (seed % 256, 0, 0)))


def test_geneval_scores_are_folded_into_the_metrics(tmp_path):
    checkout, weights = _checkout(tmp_path)
    options = {"data": str(_metadata_file(tmp_path)), "n": 3, "seed": 5, "geneval_dir": str(checkout), "detector": str(weights.parent)}
    metrics = evaluate_geneval(_pipeline(), {**options, "geneval_python": sys.executable}, tmp_path / "out")
    # Red values: prompt 0 244-246 (wrong), prompt 1 88-90 (right), prompt 2 188-190 (wrong).
    scored = metrics["geneval"]
    assert scored["tags"] == {"single_object": 0.0, "counting": 1.0, "position": 0.0}
    assert scored["overall"] == pytest.approx(1 / 3) and scored["summary_scores_overall"] == 0.33333
    assert scored["correct_images"] == pytest.approx(3 / 9) and scored["correct_prompts"] == pytest.approx(1 / 3)
    assert scored["images"] == 9 and scored["prompts"] == len(GENEVAL_LINES)
    argv = json.loads((checkout / "evaluation" / "argv.json").read_text())
    out = tmp_path / "out"
    assert argv == [str(out), "--outfile", str(out / "geneval_results.jsonl"), "--model-path", str(weights.parent)]
    assert "Overall score" in (out / "geneval_summary.txt").read_text()
    card = metrics["protocol"]
    assert card["decoding"]["images_per_prompt"] == 3 and card["decoding"]["cfg"] == 5.0 and card["notes"]["scored"] is True


def test_geneval_without_a_setup_says_what_is_missing_and_refuses_a_partial_one(tmp_path):
    data = str(_metadata_file(tmp_path))
    metrics = evaluate_geneval(_pipeline(), {"data": data, "n": 1}, tmp_path / "bare")
    assert metrics["geneval"] is None
    assert metrics["geneval_unavailable"].startswith("not scored: give -o geneval_dir=CHECKOUT (djghosh13/geneval) and -o detector=")
    with pytest.raises(EvaluationError) as error:
        evaluate_geneval(_pipeline(), {"data": data, "geneval_dir": str(tmp_path / "nowhere")}, tmp_path / "partial")
    message = str(error.value)
    assert f"{tmp_path / 'nowhere' / 'evaluation' / 'evaluate_images.py'}" in message
    assert f"detector (the {DETECTOR}.pth weights, or the folder holding them)" in message
    assert not (tmp_path / "partial").exists() or not any((tmp_path / "partial").iterdir())  # refused before drawing


def test_a_failing_geneval_script_is_reported_with_its_error(tmp_path):
    checkout, weights = _checkout(tmp_path)
    (checkout / "evaluation" / "evaluate_images.py").write_text("import mmdet\n")
    options = {"data": str(_metadata_file(tmp_path)), "n": 1, "geneval_dir": str(checkout), "detector": str(weights)}
    with pytest.raises(EvaluationError, match=r"evaluate_images.py .* failed \(exit 1\):\n(.|\n)*No module named 'mmdet'"):
        evaluate_geneval(_pipeline(), options, tmp_path / "out")
