"""The lmms-eval adapter: a local lmms-eval task over the shapes VQA
items, run on a tiny trained checkpoint, gives the same answers and the same score as
the `vqa` suite with `protocol=lmms-eval`. Skipped without lmms-eval."""

from __future__ import annotations

import json
import shutil

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from pathlib import Path  # noqa: E402

from modal_core.evaluation.run import evaluate_checkpoint  # noqa: E402
from modal_core_images.evaluation.shapes_benchmarks import write_shapes_benchmarks  # noqa: E402

from .conftest import image_plugins  # noqa: E402

TASK_DIR = Path(__file__).parent / "lmms_task"


def test_lmms_eval_task_scores_like_the_vqa_suite(tiny_checkpoint, tmp_path, monkeypatch):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    bench = write_shapes_benchmarks(tmp_path / "bench", count=6)
    records = [json.loads(line) for line in (bench / "vqa.jsonl").read_text().splitlines()]
    data = bench / "vqa10.jsonl"  # ten human answers each: both protocols score them
    data.write_text("".join(json.dumps({**r, "answers": r["answers"] * 9 + ["something else"]}) + "\n" for r in records))
    task_dir = tmp_path / "task"
    shutil.copytree(TASK_DIR, task_dir)
    yaml_file = task_dir / "modal_core_vqa.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("DATA_FILE", str(data)))
    monkeypatch.setenv("MODAL_CORE_LMMS_DATA", str(data))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    output = simple_evaluate(
        model="modal_core",
        model_args=f"checkpoint={tiny_checkpoint}",
        tasks=["modal_core_vqa"],
        task_manager=TaskManager(include_path=str(task_dir)),
        batch_size=1,
        device="cpu",
        log_samples=True,
    )
    theirs = output["results"]["modal_core_vqa"]["exact_match,none"]
    answers = [sample["filtered_resps"][0] for sample in sorted(output["samples"]["modal_core_vqa"], key=lambda s: s["doc_id"])]
    ours = evaluate_checkpoint(
        tiny_checkpoint, "vqa", {"data": str(data), "max_new_tokens": 3, "protocol": "lmms-eval"}, tmp_path / "ours", image_plugins()
    )
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "ours" / "items.jsonl").read_text().splitlines()]
    assert len(answers) == len(records) and answers == predictions
    assert theirs == pytest.approx(ours["metrics"]["vqa_accuracy"], abs=1e-12)
