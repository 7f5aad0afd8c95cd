"""`modal-core pointcloud-quickstart`: train the point-cloud quickstart recipe, then
score it on held-out shapes and draw the data set and the model's answers."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_RECIPE = "pointcloud/quickstart"
"""The shipped recipe trained by default (a name `modal_core.recipes.find` resolves)."""
DATASET_FIGURE = "pointcloud_dataset.png"
METRICS = "metrics.json"


def add_quickstart_command(subparsers) -> None:
    """Register the `pointcloud-quickstart` sub-command."""
    parser = subparsers.add_parser(
        "pointcloud-quickstart", help="train the point-cloud quickstart (synthetic 3-D shapes), then score held-out questions"
    )
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"recipe file or shipped recipe name to train (default: {DEFAULT_RECIPE})")
    parser.add_argument("--out", default="runs/pointcloud", help="output folder (default: runs/pointcloud)")
    parser.add_argument("--limit", type=int, default=200, help="held-out scenes to ask about (default 200)")
    parser.add_argument("--skip-training", action="store_true", help="evaluate the checkpoint already under --out")
    parser.add_argument("overrides", nargs="*", help="recipe key=value overrides (e.g. trainer.max_steps=50)")
    parser.set_defaults(handler=run_quickstart_command)


def run_quickstart_command(args: argparse.Namespace, plugins) -> int:
    import modal_core
    from modal_core import recipes
    from modal_core_point_cloud.evaluation import evaluate_pointcloud_qa
    from modal_core_point_cloud.render import save_point_cloud_grid
    from modal_core_point_cloud.synthetic import render_points, scene_for_index

    out = Path(args.out)
    recipe = modal_core.load_recipe(recipes.find(args.recipe), [f"output_dir={out / 'train'}", *args.overrides], plugins)
    report = out / "report"
    metrics: dict = {}
    if not args.skip_training:
        start = time.perf_counter()
        modal_core.train(recipe, plugins=plugins)
        metrics["train_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    pipeline = modal_core.load(out / "train", plugins=plugins)
    metrics.update(evaluate_pointcloud_qa(pipeline, {"limit": args.limit, "seed": 0}, report))
    metrics["eval_seconds"] = round(time.perf_counter() - start, 1)

    scenes = [scene_for_index(index, recipe.seed, "train") for index in range(16)]
    save_point_cloud_grid([render_points(scene) for scene in scenes], [scene.caption() for scene in scenes], report / DATASET_FIGURE)
    (report / METRICS).write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    print(f"report: {report}")
    return 0
