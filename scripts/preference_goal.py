"""Measure preference tuning on a trained quickstart (the numbers of docs/preference-tuning.md).

    .venv/bin/python scripts/preference_goal.py runs/quickstart --out runs/preference-goal

From `RUN/stage3` (or `--start STAGE`) it trains `quickstart/grpo` (the shapes checker's reward), the same with
the understanding self-reward alone, and `quickstart/dpo` (pairs stage 3 samples and the
checker ranks), each saving a checkpoint every `--every` steps. Stage 3 and every
checkpoint are scored on `shapes_geneval` at the suite's defaults (held-out prompts the
rewards never see) and on `shapes_understanding`. Writes `OUT/results.json` (the table
and each curve: accuracy vs step, training seconds) and `OUT/curves.png`, and prints the
table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from modal_core.checkpoints.run_folder import checkpoint_name
from modal_core.config.loader import load_recipe
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import get_plugin_manager
from modal_core.recipes import find
from modal_core.reporting import write_json
from modal_core.training.run import train

VARIANTS = {
    "grpo_checker": ("quickstart/grpo", []),
    "grpo_self_reward": ("quickstart/grpo", ["preference.rewards=[{name: understanding_self_reward}]"]),
    "dpo_checker": ("quickstart/dpo", []),
}


def score(checkpoint: Path, out: Path, plugins) -> dict:
    """`shapes_geneval` overall at its defaults and `shapes_understanding` accuracy of one checkpoint."""
    pipeline = Pipeline.load(checkpoint, plugins=plugins)
    suites = plugins.evaluators()
    geneval = suites["shapes_geneval"](pipeline, {}, _folder(out / "shapes_geneval"))
    understanding = suites["shapes_understanding"](pipeline, {}, _folder(out / "shapes_understanding"))
    return {"shapes_geneval": geneval["overall"], "tags": geneval["tags"], "understanding": understanding["accuracy"]}


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def tune(name: str, run: Path, start: str, out: Path, steps: int, every: int, plugins, extra_overrides: list[str]) -> dict:
    recipe_name, extra = VARIANTS[name]
    overrides = [
        f"output_dir={out / name}",
        f"init_from={run / start / 'checkpoints' / 'last'}",
        f"modalities.vq_generation.tokenizer_path={run / 'vq' / 'checkpoints' / 'last'}",
        f"trainer.max_steps={steps}",
        f"trainer.checkpoint_every_n_steps={every}",
        "trainer.keep_last=-1",
        "overwrite=true",
        *extra,
        *extra_overrides,
    ]
    recipe = load_recipe(find(recipe_name), overrides, plugins)
    start = time.perf_counter()
    result = train(recipe, plugins)
    seconds = time.perf_counter() - start
    curve = []
    for step in range(every, steps + 1, every):
        checkpoint = result.run_dir / "checkpoints" / checkpoint_name(step)
        curve.append({"step": step, **score(checkpoint, out / "eval" / name / f"step-{step}", plugins)})
        print(f"{name} step {step}: {curve[-1]['shapes_geneval']:.3f} geneval, {curve[-1]['understanding']:.3f} understanding", flush=True)
    return {"training_seconds": round(seconds, 1), "curve": curve}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    start = results["start"]
    for name, run in results["variants"].items():
        steps = [0] + [point["step"] for point in run["curve"]]
        for axis, key in zip(axes, ("shapes_geneval", "understanding")):
            axis.plot(steps, [start[key]] + [point[key] for point in run["curve"]], marker="o", label=name)
    for axis, title in zip(axes, ("shapes_geneval overall (held-out prompts)", "shapes_understanding accuracy")):
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a quickstart run folder holding stage3/ and vq/")
    parser.add_argument("--out", type=Path, default=Path("runs/preference-goal"), help="output folder")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps of each variant (default 60)")
    parser.add_argument("--every", type=int, default=20, help="score a checkpoint every N steps (default 20)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="which to run")
    parser.add_argument("--start", default="stage3", help="the run's stage to start from (default stage3)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides for every variant (e.g. optim.lr=1e-4)")
    args = parser.parse_args()
    plugins = get_plugin_manager()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"start_stage": args.start, "start": score(args.run / args.start, args.out / "eval" / args.start, plugins), "variants": {}}
    start = results["start"]
    print(f"{args.start}: {start['shapes_geneval']:.3f} geneval, {start['understanding']:.3f} understanding", flush=True)
    for name in args.variants:
        results["variants"][name] = tune(name, args.run, args.start, args.out, args.steps, args.every, plugins, args.set)
        write_json(results, args.out / "results.json")
    plot(results, args.out / "curves.png")
    print(f"{'model':<20} {'geneval':>8} {'understanding':>14} {'train s':>8}")
    print(f"{args.start:<20} {start['shapes_geneval']:>8.3f} {start['understanding']:>14.3f} {'':>8}")
    for name, run in results["variants"].items():
        last = run["curve"][-1]
        print(f"{name:<20} {last['shapes_geneval']:>8.3f} {last['understanding']:>14.3f} {run['training_seconds']:>8.1f}")


if __name__ == "__main__":
    main()
