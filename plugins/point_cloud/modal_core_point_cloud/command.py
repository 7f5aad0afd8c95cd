"""`modal-core pointcloud-quickstart`: train the point-cloud quickstart recipe, then
score it on held-out shapes and draw the data set and the model's answers."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from modal_core.cli import RECIPES_DIR

DEFAULT_RECIPE = RECIPES_DIR / "pointcloud" / "quickstart.yaml"
DATASET_FIGURE = "pointcloud_dataset.png"
METRICS = "metrics.json"


def add_quickstart_command(subparsers) -> None:
    """Register the `pointcloud-quickstart` sub-command."""
    parser = subparsers.add_parser(
        "pointcloud-quickstart", help="train the point-cloud quickstart (synthetic 3-D shapes), then score held-out questions"
    )
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="recipe to train (default: recipes/pointcloud/quickstart.yaml)")
    parser.add_argument("--out", default="runs/pointcloud", help="output folder (default: runs/pointcloud)")
    parser.add_argument("--limit", type=int, default=200, help="held-out scenes to ask about (default 200)")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the checkpoint already under --out")
    parser.add_argument("overrides", nargs="*", help="recipe key=value overrides (e.g. trainer.max_steps=50)")
    parser.set_defaults(handler=run_quickstart_command)


def run_quickstart_command(args: argparse.Namespace, plugins) -> int:
    from modal_core.config.loader import load_recipe
    from modal_core.generation.pipeline import Pipeline
    from modal_core.training.run import train
    from modal_core_point_cloud.evaluation import evaluate_pointcloud_qa
    from modal_core_point_cloud.render import save_point_cloud_grid
    from modal_core_point_cloud.synthetic import render_points, scene_for_index

    out = Path(args.out)
    recipe = load_recipe(args.recipe, [f"output_dir={out / 'train'}", *args.overrides], plugins)
    report = out / "report"
    metrics: dict = {}
    if not args.skip_training:
        start = time.perf_counter()
        train(recipe, plugins)
        metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    pipeline = Pipeline.load(out / "train", plugins=plugins)
    metrics.update(evaluate_pointcloud_qa(pipeline, {"limit": args.limit, "seed": 0}, report))
    metrics["eval_seconds"] = round(time.perf_counter() - start, 1)

    scenes = [scene_for_index(index, recipe.seed, "train") for index in range(16)]
    save_point_cloud_grid([render_points(scene) for scene in scenes], [scene.caption() for scene in scenes], report / DATASET_FIGURE)
    (report / METRICS).write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    print(f"report: {report}")
    return 0
