"""Registers the image data sets, the image evaluation suites and rewards, `modal-core quickstart`,
`modal-core ablate` and the Janus checkpoint commands (`modal-core convert`, `modal-core export`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modal_core import arguments
from modal_core.hookspecs import hookimpl
from modal_core_images.datasets import IMAGE_DATASETS
from modal_core_images.janus_command import add_janus_commands

# The suites and the quickstart import the evaluation and training stacks: they are
# imported when used, so listing plugins or starting the CLI stays fast.


@hookimpl
def modal_core_datasets() -> dict[str, Any]:
    return dict(IMAGE_DATASETS)


@hookimpl
def modal_core_evaluators() -> dict[str, Any]:
    from modal_core_images.evaluation.generation_suites import evaluate_fid, evaluate_geneval, evaluate_shapes_geneval
    from modal_core_images.evaluation.shapes_eval import evaluate_shapes_understanding
    from modal_core_images.evaluation.understanding_suites import evaluate_multiple_choice, evaluate_pope, evaluate_vqa

    return {
        "vqa": evaluate_vqa,
        "multiple_choice": evaluate_multiple_choice,
        "pope": evaluate_pope,
        "geneval": evaluate_geneval,
        "shapes_geneval": evaluate_shapes_geneval,
        "fid": evaluate_fid,
        "shapes_understanding": evaluate_shapes_understanding,
    }


@hookimpl
def modal_core_rewards() -> dict[str, Any]:
    from modal_core_images.rewards import REWARDS

    return dict(REWARDS)


@hookimpl
def modal_core_commands(subparsers: Any) -> None:
    quickstart = subparsers.add_parser("quickstart", help="train every Janus stage on the built-in shapes world, offline, and report")
    quickstart.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    quickstart.add_argument(
        "--scale",
        type=arguments.positive_float,
        default=1.0,
        help="multiply every stage's steps and the evaluation size (e.g. 0.1 to try it out)",
    )
    quickstart.add_argument("--no-progress", action="store_true", help="hide progress bars")
    quickstart.add_argument(
        "--seeds",
        type=arguments.seed,
        nargs="+",
        default=[0],
        metavar="SEED",
        help="train stages 1-3 once per seed (text LM and VQ tokenizer shared; seed S in OUT/seedS) and report mean ± sd (default: 0)",
    )
    quickstart.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: evaluate the checkpoints already in --out and write the report again",
    )
    quickstart.set_defaults(handler=_quickstart)
    _add_ablate(subparsers)
    add_janus_commands(subparsers)


def _add_ablate(subparsers: Any) -> None:
    ablate = subparsers.add_parser(
        "ablate", help="train each arm of an encoder ablation (decoupled vs shared, ...) on one budget and tabulate their scores"
    )
    ablate.add_argument(
        "folder", nargs="?", default="recipes/ablation", help="folder of arm recipes (default: recipes/ablation, the shipped one)"
    )
    ablate.add_argument("overrides", nargs="*", help="key=value overrides for every arm (e.g. its data)")
    ablate.add_argument("--out", default="runs/ablation", help="output folder (default: runs/ablation)")
    ablate.add_argument("--seeds", type=arguments.seed, nargs="+", default=[0], metavar="SEED", help="seeds of every arm (default: 0)")
    ablate.add_argument("--scale", type=arguments.positive_float, default=1.0, help="multiply every run's steps and the evaluation size")
    ablate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ablate.set_defaults(handler=_ablate)


def _ablate(args: argparse.Namespace, plugins: Any) -> int:
    from modal_core import recipes
    from modal_core_images.ablation import Ablation

    folder = Path(args.folder)
    if not folder.is_dir():  # a shipped folder's name as the docs write it, also where no checkout is
        folder = recipes.shipped_dir() / args.folder.removeprefix(recipes.CHECKOUT_PREFIX)
    ablation = Ablation(folder, Path(args.out), plugins, tuple(args.overrides), args.scale, args.scale, not args.no_progress)
    ablation.run(tuple(dict.fromkeys(args.seeds)))
    return 0


def _quickstart(args: argparse.Namespace, plugins: Any) -> int:
    from modal_core_images.quickstart import run_quickstart

    metrics = run_quickstart(
        Path(args.out),
        plugins,
        step_scale=args.scale,
        eval_scale=args.scale,
        progress_bar=not args.no_progress,
        seeds=tuple(dict.fromkeys(args.seeds)),  # a seed named twice is trained once
        train_missing=not args.report_only,
    )
    print(json.dumps(metrics, indent=2))
    return 0
