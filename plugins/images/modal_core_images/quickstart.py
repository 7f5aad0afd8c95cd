"""The offline quickstart: every Janus training stage on the built-in shapes world,
then answers and drawings for held-out cases, and a report folder.

text LM + text tokenizer -> VQ tokenizer -> stage 1 -> stage 2 -> stage 3 -> evaluation.
Each step is an ordinary run of a shipped recipe (`quickstart/*.yaml`); a step whose final
checkpoint already exists is skipped, so an interrupted quickstart continues where it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from modal_core import recipes, train
from modal_core.checkpoints.run_folder import HISTORY_FILE, checkpoint_name, read_history
from modal_core.checkpoints.store import CHECKPOINT_DIR
from modal_core.config.loader import load_recipe
from modal_core.evaluation.metrics import codebook_usage, psnr
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import PluginManager
from modal_core.reporting import plot_curves, write_json
from modal_core_images.evaluation.shapes_eval import (
    evaluate_generation,
    evaluate_understanding,
    save_generation_grid,
    save_understanding_grid,
)
from modal_core_images.modalities import GENERATION
from modal_core_images.shapes import render_scene, scene_for_index

QUICKSTART_CFG = 3.0
"""Guidance scale of the headline generation score: the tiny model draws best at 3;
Janus's default of 5 is scored too (`generation_accuracy_cfg5`)."""


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


def _overrides(step: Step, out: Path, step_scale: float, max_steps: int, progress_bar: bool) -> list[str]:
    overrides = [f"output_dir={out / step.name}", f"trainer.progress_bar={str(progress_bar).lower()}"]
    if step_scale != 1.0:
        overrides += [
            f"trainer.max_steps={max(2, round(max_steps * step_scale))}",
            "trainer.checkpoint_every_n_steps=0",
            "trainer.val_every_n_steps=0",
        ]
    if step.init_from:
        overrides.append(f"init_from={out / step.init_from}")
    if step.uses_trained_vq:
        overrides.append(f"modalities.{GENERATION}.tokenizer_path={out / 'vq'}")
    return overrides


def run_quickstart(out: Path, plugins: PluginManager, step_scale: float = 1.0, progress_bar: bool = True, eval_scale: float = 1.0) -> dict:
    """Run every step into `out`, evaluate, write the report; returns the metrics."""
    out = Path(out)
    timings: dict[str, float] = {}
    for step in STEPS:
        path = recipes.find(step.recipe)
        max_steps = load_recipe(path, plugins=plugins).trainer.max_steps
        overrides = _overrides(step, out, step_scale, max_steps, progress_bar)
        final = out / step.name / CHECKPOINT_DIR / checkpoint_name(load_recipe(path, overrides, plugins).trainer.max_steps)
        if final.is_dir():
            print(f"[quickstart] {step.name}: already trained ({final})")
            continue
        if (out / step.name).exists():
            print(f"[quickstart] {step.name}: an earlier run stopped before its last step; training it again")
            overrides.append("overwrite=true")
        recipe = load_recipe(path, overrides, plugins)
        print(f"[quickstart] {step.name}: {recipe.description}")
        started = time.perf_counter()
        train(recipe, plugins=plugins)
        timings[step.name] = round(time.perf_counter() - started, 1)
    return evaluate(out, plugins, timings, eval_scale)


def _tokenizer_quality(pipeline: Pipeline, image_size: int, grid: int | None, count: int = 128) -> dict[str, float]:
    """Reconstruction PSNR and codebook usage of the VQ tokenizer on unseen images."""
    processor = pipeline.modalities[GENERATION].processor
    scenes = [scene_for_index(i, 99, "heldout", image_size=image_size, grid=grid) for i in range(count)]
    images = torch.stack([processor(render_scene(scene)) for scene in scenes])
    tokenizer = pipeline.model.encoders[GENERATION]
    with torch.no_grad():
        codes = tokenizer.encode(images)
        reconstruction = tokenizer.decode(codes)
    return {
        "psnr_db": round(psnr(images, reconstruction), 2),
        "codebook_usage": round(codebook_usage(codes, tokenizer.codebook_size), 3),
    }


def _shapes_settings(plugins: PluginManager) -> tuple[int, int | None]:
    """Image size and grid the final stage was trained with."""
    recipe = load_recipe(recipes.find(STEPS[-1].recipe), plugins=plugins)
    options = next(source.options for source in recipe.data.sources if source.dataset == "shapes")
    return int(options.image_size), options.get("grid")


def evaluate(out: Path, plugins: PluginManager, timings: dict[str, float], eval_scale: float = 1.0) -> dict:
    """Score the final model and write `out/report/`: metrics.json, curves.png,
    generations.png and understanding.png."""
    report = out / "report"
    report.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline.load(out / "stage3", plugins=plugins)
    image_size, grid = _shapes_settings(plugins)
    print("[quickstart] answering questions about held-out images ...")
    understanding = evaluate_understanding(pipeline, image_size, grid, count=max(20, round(200 * eval_scale)))
    print("[quickstart] drawing images for prompts ...")
    per_prompt, two_object = max(1, round(2 * eval_scale)), max(2, round(10 * eval_scale))
    generation = evaluate_generation(pipeline, per_prompt, cfg=QUICKSTART_CFG, two_object_prompts=two_object)
    janus_default = evaluate_generation(pipeline, per_prompt, cfg=5.0, two_object_prompts=two_object)
    histories = {step.name: out / step.name / HISTORY_FILE for step in STEPS}
    metrics = {
        "understanding_accuracy": round(understanding.accuracy, 3),
        "understanding_questions": understanding.total,
        "generation_accuracy": round(generation.accuracy, 3),
        "generation_two_object_accuracy": round(generation.two_object_accuracy, 3),
        "generation_cfg": QUICKSTART_CFG,
        "generation_accuracy_cfg5": round(janus_default.accuracy, 3),
        "generated_images": generation.total,
        "vq_tokenizer": _tokenizer_quality(pipeline, image_size, grid),
        "final_train_loss": {name: _last_loss(path) for name, path in histories.items()},
        "training_seconds": timings,
    }
    write_json(metrics, report / "metrics.json")
    plot_curves(histories, report / "curves.png")
    save_generation_grid(generation, report / "generations.png")
    save_understanding_grid(understanding, report / "understanding.png")
    print(
        f"[quickstart] report in {report}: understanding accuracy {metrics['understanding_accuracy']}, "
        f"generation accuracy {metrics['generation_accuracy']}"
    )
    return metrics


def _last_loss(history: Path) -> float | None:
    losses = [r["train/loss"] for r in read_history(history) if "train/loss" in r]
    return round(losses[-1], 4) if losses else None
