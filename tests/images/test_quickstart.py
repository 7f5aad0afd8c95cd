"""A shortened quickstart: every stage runs, loss falls, the report is written, and the
trained model loads for answering and drawing through the Python API and the CLI."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, with_image_plugins
from PIL import Image

import modal_core
from modal_core import recipes
from modal_core.checkpoints.run_folder import read_history
from modal_core.cli import build_parser
from modal_core.plugins import PluginManager
from modal_core_images.evaluation.shapes_diagnosis import condition_information, heldout_scenes
from modal_core_images.quickstart import STEPS, run_quickstart
from modal_core_images.shapes import caption, render_scene


def test_the_image_plugin_adds_the_quickstart_command_and_finds_its_recipes():
    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    args = build_parser(plugins).parse_args(["quickstart", "--scale", "0.1"])
    assert args.scale == 0.1 and args.handler.__module__ == "modal_core_images.plugin"
    assert all(recipes.find(step.recipe).is_file() for step in STEPS)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    metrics = run_quickstart(
        out, with_image_plugins(PluginManager(load_entry_points=False)), step_scale=0.05, eval_scale=0.1, progress_bar=False
    )
    return out, metrics


def test_every_stage_trains_and_the_report_is_written(quickstart_run):
    out, metrics = quickstart_run
    for step in STEPS:
        assert (out / step.name / "checkpoints" / "last" / "model.safetensors").is_file(), step.name
    for name in ("metrics.json", "curves.png", "generations.png", "understanding.png"):
        assert (out / "report" / name).is_file(), name
    assert json.loads((out / "report" / "metrics.json").read_text()) == metrics
    assert 0.0 <= metrics["understanding_accuracy"] <= 1.0 and metrics["understanding_questions"] == 20
    assert metrics["generated_images"] == 20 + 2
    with Image.open(out / "report" / "generations.png") as grid:
        assert grid.width > 400
    assert metrics["vq_tokenizer"]["codebook_usage"] > 0


def test_losses_fall_in_the_longest_stage(quickstart_run):
    out, _ = quickstart_run
    losses = [r["train/loss"] for r in read_history(out / "stage2" / "history.jsonl") if "train/loss" in r]
    assert len(losses) >= 5
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_a_second_run_skips_finished_stages(quickstart_run, capsys):
    out, _ = quickstart_run
    run_quickstart(out, with_image_plugins(PluginManager(load_entry_points=False)), step_scale=0.05, eval_scale=0.1, progress_bar=False)
    printed = capsys.readouterr().out
    assert printed.count("already trained") == len(STEPS)


def test_trained_model_answers_and_draws_reproducibly(quickstart_run):
    out, _ = quickstart_run
    model = modal_core.load(out / "stage3")
    image = Image.new("RGB", (40, 30), (240, 240, 240))
    answer = model.answer("what colour is the circle?", image=image)
    assert isinstance(answer, str)
    first = model.generate_images("a red circle", n=2, cfg=3.0, seed=3)
    again = model.generate_images("a red circle", n=2, cfg=3.0, seed=3)
    assert [im.size for im in first] == [(32, 32), (32, 32)]
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]


def test_generate_and_understand_commands(quickstart_run, tmp_path):
    out, _ = quickstart_run
    result = run_cli("generate", str(out / "stage3"), "--prompt", "a blue square", "--n", "2", "--out", str(tmp_path / "png"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["prompt00_000.png", "prompt00_001.png"]
    result = run_cli(
        "understand",
        str(out / "stage3"),
        "--image",
        str(tmp_path / "png" / "prompt00_000.png"),
        "--question",
        "what shape is the blue object?",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() != ""
    result = run_cli("understand", str(out / "stage3"), "--image", str(tmp_path / "missing.png"), "--question", "what?")
    assert result.returncode == 1 and "missing.png" in result.stderr and "Traceback" not in result.stderr


def test_quickstart_checkpoint_through_the_evaluation_suites(quickstart_run, tmp_path):
    from modal_core.evaluation.run import evaluate_checkpoint
    from modal_core_images.evaluation import geneval
    from modal_core_images.evaluation.shapes_benchmarks import write_shapes_benchmarks

    out, _ = quickstart_run
    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    data = write_shapes_benchmarks(tmp_path / "bench", count=6)
    vqa = evaluate_checkpoint(out / "stage3", "vqa", {"data": str(data), "limit": 6}, tmp_path / "vqa", plugins)
    items = [json.loads(line) for line in (tmp_path / "vqa" / "items.jsonl").read_text().splitlines()]
    assert vqa["metrics"]["count"] == len(items) == 6
    assert vqa["metrics"]["exact_match"] == pytest.approx(sum(i["exact_match"] for i in items) / 6)
    drawn = evaluate_checkpoint(out / "stage3", "shapes_geneval", {"limit": 4, "n": 1, "cfg": 3.0}, tmp_path / "gen", plugins)
    assert drawn["metrics"]["images"] == 4 and 0.0 <= drawn["metrics"]["overall"] <= 1.0
    assert geneval.validate_folder(tmp_path / "gen", samples_per_prompt=1) == 4
    assert (tmp_path / "gen" / "report.md").is_file() and (tmp_path / "gen" / "results.json").is_file()


def test_only_the_conditional_loss_reads_the_caption(quickstart_run):
    """The diagnosis's condition measurement: dropping the condition removes the caption."""
    out, _ = quickstart_run
    pipeline = modal_core.load(out / "stage3", plugins=with_image_plugins(PluginManager(load_entry_points=False)))
    scenes = heldout_scenes(8, 32, 8)[::2]  # one-object scenes
    images = [render_scene(scene) for scene in scenes]
    right = condition_information(pipeline, [(caption(scene), image) for scene, image in zip(scenes, images)])
    other_colour = [
        caption(scene).replace(scene.objects[0].colour, "green" if scene.objects[0].colour != "green" else "red") for scene in scenes
    ]
    wrong = condition_information(pipeline, list(zip(other_colour, images)))
    assert wrong.unconditional == pytest.approx(right.unconditional, rel=1e-5)
    assert abs(wrong.conditional - right.conditional) > 1e-3
    assert right.gain == pytest.approx(right.unconditional - right.conditional)
