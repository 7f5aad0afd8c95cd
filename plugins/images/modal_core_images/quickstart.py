"""The offline quickstart: every Janus training stage on the built-in shapes world,
then answers and drawings for held-out cases, and a report folder.

text LM + text tokenizer -> VQ tokenizer -> stage 1 -> stage 2 -> stage 3 -> evaluation.
Each step is an ordinary run of a shipped recipe (`quickstart/*.yaml`); a step whose final
checkpoint already exists is skipped, so an interrupted quickstart continues where it was.
With several seeds the text LM and the VQ tokenizer are trained once and shared; stages
1-3 are trained per seed (seed 0 in `out/`, seed S in `out/seedS/`) and the report gives
each seed's numbers and their mean ± sd.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from modal_core import recipes, train
from modal_core.checkpoints.run_folder import HISTORY_FILE, checkpoint_name, read_history
from modal_core.checkpoints.store import CHECKPOINT_DIR
from modal_core.config.loader import load_recipe
from modal_core.errors import CheckpointError
from modal_core.evaluation.metrics import codebook_usage, psnr
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import PluginManager
from modal_core.reporting import plot_curves, write_json
from modal_core_images.evaluation.generation_suites import evaluate_shapes_geneval
from modal_core_images.evaluation.shapes_diagnosis import positional_diversity
from modal_core_images.evaluation.shapes_eval import (
    evaluate_generation,
    evaluate_understanding,
    save_generation_grid,
    save_understanding_grid,
)
from modal_core_images.modalities import GENERATION
from modal_core_images.processing import tensor_to_image
from modal_core_images.quickstart_report import SeedEvaluation, summarise_seeds, write_index
from modal_core_images.shapes import render_scene, scene_for_index

QUICKSTART_CFG = 3.0
"""Guidance scale of the first generation score; Janus's default of 5 is scored too
(`generation_accuracy_cfg5`). Both draw with the model's own schedule and plausibility
constraint (the `generation:` section of quickstart/images.yaml)."""
DIVERSITY_SAMPLES = 16
"""Draws of each one-object prompt whose object centres the diversity score counts."""


@dataclass(frozen=True)
class Step:
    """One recipe run of the quickstart."""

    name: str
    recipe: str
    init_from: str | None = None
    uses_trained_vq: bool = False


STEPS = (
    Step("text", "quickstart/text"),
    Step("vq", "quickstart/vq"),
    Step("stage1", "quickstart/stage1", init_from="text", uses_trained_vq=True),
    Step("stage2", "quickstart/stage2", init_from="stage1", uses_trained_vq=True),
    Step("stage3", "quickstart/stage3", init_from="stage2", uses_trained_vq=True),
)
SHARED_STEPS = ("text", "vq")
"""Steps trained once and shared by every seed."""

TIMINGS_FILE = "timings.json"
"""Seconds each trained step took, keyed by its folder relative to the run (`stage1`,
`seed1/stage1`): kept in the run so a report made later still states them."""

RECONSTRUCTIONS_SHOWN = 12


def seed_folder(out: Path, seed: int) -> Path:
    """Where the per-seed stages of `seed` live: `out` for seed 0, `out/seed<S>` otherwise."""
    return out if seed == 0 else out / f"seed{seed}"


def _step_folder(out: Path, step: Step, seed: int) -> Path:
    return out / step.name if step.name in SHARED_STEPS else seed_folder(out, seed) / step.name


def _overrides(step: Step, out: Path, seed: int, step_scale: float, max_steps: int, progress_bar: bool) -> list[str]:
    overrides = [f"output_dir={_step_folder(out, step, seed)}", f"trainer.progress_bar={str(progress_bar).lower()}"]
    if step.name not in SHARED_STEPS:
        overrides.append(f"seed={seed}")
    if step_scale != 1.0:
        overrides += [
            f"trainer.max_steps={max(2, round(max_steps * step_scale))}",
            "trainer.checkpoint_every_n_steps=0",
            "trainer.val_every_n_steps=0",
        ]
    if step.init_from:
        overrides.append(f"init_from={_step_folder(out, STEPS_BY_NAME[step.init_from], seed)}")
    if step.uses_trained_vq:
        overrides.append(f"modalities.{GENERATION}.tokenizer_path={out / 'vq'}")
    return overrides


STEPS_BY_NAME = {step.name: step for step in STEPS}


def run_quickstart(
    out: Path,
    plugins: PluginManager,
    step_scale: float = 1.0,
    progress_bar: bool = True,
    eval_scale: float = 1.0,
    seeds: tuple[int, ...] = (0,),
    train_missing: bool = True,
) -> dict:
    """Run every step into `out` for every seed (text LM and VQ once), evaluate, write the
    report; returns the metrics. With `train_missing=False` nothing is trained: the report
    is made again from the checkpoints already in `out` (a missing one is an error)."""
    out = Path(out)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    for seed in seeds:
        for step in STEPS:
            if step.name not in SHARED_STEPS or seed == seeds[0]:
                _train_step(step, out, seed, plugins, step_scale, progress_bar, train_missing)
    return evaluate(out, plugins, eval_scale, seeds)


def _train_step(
    step: Step, out: Path, seed: int, plugins: PluginManager, step_scale: float, progress_bar: bool, train_missing: bool
) -> None:
    path = recipes.find(step.recipe)
    max_steps = load_recipe(path, plugins=plugins).trainer.max_steps
    overrides = _overrides(step, out, seed, step_scale, max_steps, progress_bar)
    folder = _step_folder(out, step, seed)
    name = folder.relative_to(out).as_posix()
    final = folder / CHECKPOINT_DIR / checkpoint_name(load_recipe(path, overrides, plugins).trainer.max_steps)
    if final.is_dir():
        print(f"[quickstart] {name}: already trained ({final})")
        return
    if not train_missing:
        raise CheckpointError(
            f"{final} is missing: a report is made only for a run whose every step finished; train with `modal-core quickstart --out {out}`"
        )
    if folder.exists():
        print(f"[quickstart] {name}: an earlier run stopped before its last step; training it again")
        overrides.append("overwrite=true")
    recipe = load_recipe(path, overrides, plugins)
    print(f"[quickstart] {name}: {recipe.description}")
    started = time.perf_counter()
    train(recipe, plugins=plugins)
    timings = read_timings(out)
    timings[name] = round(time.perf_counter() - started, 1)
    write_json(timings, out / TIMINGS_FILE)


def read_timings(out: Path) -> dict[str, float]:
    """The seconds each trained step took (`TIMINGS_FILE`); for a run made before that file
    existed, the seed-0 `training_seconds` of its earlier `report/metrics.json`."""
    if (out / TIMINGS_FILE).is_file():
        return json.loads((out / TIMINGS_FILE).read_text())
    earlier = out / "report" / "metrics.json"
    if earlier.is_file():
        seconds = json.loads(earlier.read_text()).get("training_seconds", {})
        return {name: value for name, value in seconds.items() if name in STEPS_BY_NAME}
    return {}


def _tokenizer_quality(pipeline: Pipeline, image_size: int, grid: int | None, count: int = 128) -> tuple[dict[str, float], list]:
    """Reconstruction PSNR and codebook usage of the VQ tokenizer on unseen images, and the
    first (original, reconstruction) image pairs."""
    processor = pipeline.modalities[GENERATION].processor
    scenes = [scene_for_index(i, 99, "heldout", image_size=image_size, grid=grid) for i in range(count)]
    images = torch.stack([processor(render_scene(scene)) for scene in scenes])
    tokenizer = pipeline.model.encoders[GENERATION]
    with torch.no_grad():
        codes = tokenizer.encode(images)
        reconstruction = tokenizer.decode(codes)
    quality = {
        "psnr_db": round(psnr(images, reconstruction), 2),
        "codebook_usage": round(codebook_usage(codes, tokenizer.codebook_size), 3),
    }
    pairs = [(tensor_to_image(images[i]), tensor_to_image(reconstruction[i])) for i in range(min(count, RECONSTRUCTIONS_SHOWN))]
    return quality, pairs


def _shapes_settings(plugins: PluginManager) -> tuple[int, int | None]:
    """Image size and grid the final stage was trained with."""
    recipe = load_recipe(recipes.find(STEPS[-1].recipe), plugins=plugins)
    options = next(source.options for source in recipe.data.sources if source.dataset == "shapes")
    return int(options.image_size), options.get("grid")


def evaluate(out: Path, plugins: PluginManager, eval_scale: float = 1.0, seeds: tuple[int, ...] = (0,)) -> dict:
    """Score each seed's final model and write `out/report/`: metrics.json, index.html,
    curves.png, generations.png (CFG 3), generations_cfg5.png and understanding.png; with
    several seeds each seed's pictures go to `report/seed<S>/` and metrics.json holds each
    seed's metrics with their mean and sd."""
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    timings = read_timings(out)
    per_seed, evaluations = {}, []
    for seed in seeds:
        pictures = report / f"seed{seed}" if len(seeds) > 1 else report
        pictures.mkdir(exist_ok=True)
        metrics, evaluation = _evaluate_seed(out, seed, plugins, eval_scale, timings, pictures)
        per_seed[seed], evaluations = metrics, [*evaluations, evaluation]
    metrics = per_seed[seeds[0]] if len(seeds) == 1 else summarise_seeds(per_seed)
    write_json(metrics, report / "metrics.json")
    write_index(report / "index.html", metrics, evaluations)
    headline = metrics if len(seeds) == 1 else metrics["mean"]
    print(
        f"[quickstart] report in {report / 'index.html'}: understanding accuracy {headline['understanding_accuracy']}, "
        f"generation accuracy {headline['generation_accuracy']}{' (mean over seeds)' if len(seeds) > 1 else ''}"
    )
    return metrics


def _evaluate_seed(
    out: Path, seed: int, plugins: PluginManager, eval_scale: float, timings: dict[str, float], pictures: Path
) -> tuple[dict, SeedEvaluation]:
    started = time.perf_counter()
    folder = seed_folder(out, seed)
    pipeline = Pipeline.load(folder / "stage3", plugins=plugins)
    image_size, grid = _shapes_settings(plugins)
    print(f"[quickstart] seed {seed}: answering questions about held-out images ...")
    understanding = evaluate_understanding(pipeline, image_size, grid, count=max(20, round(200 * eval_scale)))
    print(f"[quickstart] seed {seed}: drawing images for prompts ...")
    per_prompt, two_object = max(1, round(4 * eval_scale)), max(2, round(20 * eval_scale))
    generation = evaluate_generation(pipeline, per_prompt, cfg=QUICKSTART_CFG, two_object_prompts=two_object)
    janus_default = evaluate_generation(pipeline, per_prompt, cfg=5.0, two_object_prompts=two_object)
    samples = max(4, round(DIVERSITY_SAMPLES * eval_scale))
    diversity = positional_diversity(pipeline, image_size, grid, samples, cfg=5.0).summary()
    geneval_mini = _shapes_geneval(pipeline, pictures / "shapes_geneval", eval_scale)
    vq_quality, reconstructions = _tokenizer_quality(pipeline, image_size, grid)
    folders = {step.name: _step_folder(out, step, seed) for step in STEPS}
    histories = {name: path / HISTORY_FILE for name, path in folders.items()}
    seconds = {name: timings[key] for name, path in folders.items() if (key := path.relative_to(out).as_posix()) in timings}
    if len(seconds) == len(STEPS):
        seconds["total"] = round(sum(seconds.values()), 1)
    plot_curves(histories, pictures / "curves.png")
    save_generation_grid(generation, pictures / "generations.png")
    save_generation_grid(janus_default, pictures / "generations_cfg5.png")
    save_understanding_grid(understanding, pictures / "understanding.png")
    metrics = {
        "seed": seed,
        "understanding_accuracy": round(understanding.accuracy, 3),
        "understanding_questions": understanding.total,
        "generation_accuracy": round(generation.accuracy, 3),
        "generation_two_object_accuracy": round(generation.two_object_accuracy, 3),
        "generation_cfg": QUICKSTART_CFG,
        "generation_accuracy_cfg5": round(janus_default.accuracy, 3),
        "generation_two_object_accuracy_cfg5": round(janus_default.two_object_accuracy, 3),
        "generated_images": generation.total,
        "diversity_cfg5": {"samples_per_prompt": samples, **diversity},
        "shapes_geneval": geneval_mini,
        "generation_settings": pipeline.generation.as_dict(),
        "vq_tokenizer": vq_quality,
        "final_train_loss": {name: _last_loss(path) for name, path in histories.items()},
        "training_seconds": seconds,
        "evaluation_seconds": round(time.perf_counter() - started, 1),
    }
    if "total" in seconds:
        metrics["seconds_total"] = round(seconds["total"] + metrics["evaluation_seconds"], 1)
    generations = {QUICKSTART_CFG: generation, 5.0: janus_default}
    evaluation = SeedEvaluation(seed, generations, understanding, reconstructions, pictures / "curves.png")
    return metrics, evaluation


def _shapes_geneval(pipeline: Pipeline, folder: Path, eval_scale: float) -> dict:
    """The `shapes_geneval` suite at its defaults (the model's own guidance), scaled down
    with `eval_scale`: overall score and per-tag accuracies. `folder` is made afresh."""
    if folder.exists():
        shutil.rmtree(folder)  # the report's own folder: items of an earlier model must not be resumed
    folder.mkdir(parents=True)
    options = {"per_tag": max(1, round(20 * eval_scale)), "n": max(1, round(4 * eval_scale))}
    summary = evaluate_shapes_geneval(pipeline, options, folder)
    return {"overall": round(summary["overall"], 3), "tags": {tag: round(value, 3) for tag, value in summary["tags"].items()}, **options}


def _last_loss(history: Path) -> float | None:
    losses = [r["train/loss"] for r in read_history(history) if "train/loss" in r]
    return round(losses[-1], 4) if losses else None
