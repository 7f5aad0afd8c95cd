"""The shipped point-cloud recipes, one tiny training step of the quickstart, and
`modal-core understand --points FILE` on the tiny checkpoint (in-process and as a
subprocess through the installed entry points)."""

from __future__ import annotations

import json

import open3d as o3d
import pytest
from conftest import REPO, TINY_BACKBONE, run_cli, write_recipe

from modal_core.checkpoints.run_folder import read_history
from modal_core.cli import main
from modal_core.config.loader import load_recipe
from modal_core.generation.pipeline import Pipeline
from modal_core.training.run import train
from modal_core_point_cloud.evaluation import FIGURE, evaluate_pointcloud_qa
from modal_core_point_cloud.io import to_open3d
from modal_core_point_cloud.synthetic import render_points, scene_for_index

from .helpers import TINY_POINT_CLOUD, point_cloud_plugins

QUICKSTART = REPO / "recipes" / "pointcloud" / "quickstart.yaml"
MODELNET = REPO / "recipes" / "pointcloud" / "modelnet40.yaml"
QUESTION = "what shape is this?"


def _tiny_recipe(folder) -> dict:
    """The quickstart recipe (as its base) shrunk to tiny sizes and two steps."""
    sources = [{"dataset": "pointcloud_shapes", "options": {"task": task, "points": 128}} for task in ("qa", "caption")]
    return {
        "base": str(QUICKSTART),
        "output_dir": str(folder / "quickstart" / "train"),  # where `pointcloud-quickstart --out quickstart` looks
        "tokenizer": {"train": {"num_sentences": 300, "vocab_size": 300}},
        "backbone": TINY_BACKBONE,
        "modalities": {"point_cloud": TINY_POINT_CLOUD},
        "data": {"sources": sources, "batch_size": 4, "val_samples": 0},
        "trainer": {"max_steps": 2, "progress_bar": False, "log_every_n_steps": 1},
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The quickstart recipe shrunk to tiny sizes, trained for two steps."""
    folder = tmp_path_factory.mktemp("pointcloud")
    plugins = point_cloud_plugins()
    (folder / "quickstart").mkdir()
    recipe = load_recipe(write_recipe(folder / "quickstart" / "tiny.yaml", _tiny_recipe(folder)), plugins=plugins)
    result = train(recipe, plugins)
    cone = render_points(next(s for s in (scene_for_index(i, 0, "heldout") for i in range(40)) if s.shape == "cone"), 256)
    ply = folder / "cone.ply"
    assert o3d.io.write_point_cloud(str(ply), to_open3d(cone))
    return plugins, result, ply


def test_shipped_recipes_validate_with_the_plugin():
    plugins = point_cloud_plugins()
    quickstart = load_recipe(QUICKSTART, plugins=plugins)
    assert quickstart.modalities.point_cloud.num_patches == 16
    assert {source.dataset for source in quickstart.data.sources} == {"pointcloud_shapes"}
    sketch = load_recipe(MODELNET, plugins=plugins)
    assert sketch.data.sources[0].dataset == "pointcloud_folder" and sketch.modalities.point_cloud.normals


def test_quickstart_trains_a_tiny_step(tiny_run):
    _, result, _ = tiny_run
    history = read_history(result.history)
    losses = [row["train/loss"] for row in history if "train/loss" in row]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert (result.checkpoint / "model.safetensors").is_file() or any(result.checkpoint.glob("*.safetensors"))


def test_understand_cli_answers_about_a_ply_file(tiny_run, capsys):
    plugins, result, ply = tiny_run
    args = ["understand", str(result.checkpoint), "--points", str(ply), "--question", QUESTION, "--max-new-tokens", "4"]
    assert main(args, plugins=plugins) == 0
    printed = capsys.readouterr().out.strip()
    # The same answer as the pipeline given the processed payload directly: the file was read and processed.
    pipeline = Pipeline.load(result.checkpoint, plugins=plugins)
    payload = pipeline.modalities["point_cloud"].processor(ply)
    assert payload.shape == (128, 6)  # x, y, z and normals
    assert printed == pipeline.answer(QUESTION, media={"point_cloud": payload}, max_new_tokens=4)


def test_understand_cli_names_a_bad_file_without_traceback(tiny_run, tmp_path, capsys):
    plugins, result, _ = tiny_run
    bad = tmp_path / "flat.xyz"
    bad.write_text("1 2\n3 4\n")
    args = ["understand", str(result.checkpoint), "--points", str(bad), "--question", QUESTION]
    assert main(args, plugins=plugins) == 1
    error = capsys.readouterr().err
    assert f"{bad}: lines have 2 value(s)" in error and "Traceback" not in error


def test_understand_subprocess_with_installed_plugins(tiny_run):
    plugins, result, ply = tiny_run
    # Run outside the source tree, as a user would (a stale *.egg-info there could shadow the install).
    arguments = ("understand", str(result.checkpoint), "--points", str(ply), "--question", QUESTION, "--max-new-tokens", "4")
    completed = run_cli(*arguments, cwd=ply.parent)
    assert completed.returncode == 0, completed.stderr
    expected = Pipeline.load(result.checkpoint, plugins=plugins).answer(QUESTION, media={"point_cloud": ply}, max_new_tokens=4)
    assert completed.stdout.strip() == expected


def test_evaluator_runs_on_the_tiny_checkpoint(tiny_run, tmp_path):
    plugins, result, _ = tiny_run
    pipeline = Pipeline.load(result.checkpoint, plugins=plugins)
    metrics = plugins.evaluators()["pointcloud_qa"](pipeline, {"limit": 3, "batch_size": 6, "progress": False}, tmp_path)
    assert metrics["questions"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "pointcloud_answers.jsonl").read_text().splitlines()]
    correct = sum(r["answer"].strip().rstrip(".").lower() == r["expected"] for r in records)
    assert metrics["accuracy"] == pytest.approx(correct / 6)
    assert (tmp_path / FIGURE).is_file()
    assert evaluate_pointcloud_qa is plugins.evaluators()["pointcloud_qa"]


def test_quickstart_command_evaluates_and_draws(tiny_run, capsys):
    plugins, result, _ = tiny_run
    out = result.run_dir.parent
    args = ["pointcloud-quickstart", "--out", str(out), "--recipe", str(out / "tiny.yaml"), "--skip-training", "--limit", "2"]
    assert main(args, plugins=plugins) == 0
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["scenes"] == 2 and metrics["questions"] == 4 and "train_seconds" not in metrics
    for picture in ("pointcloud_dataset.png", FIGURE):
        assert (out / "report" / picture).stat().st_size > 10_000
    assert f"report: {out / 'report'}" in capsys.readouterr().out
