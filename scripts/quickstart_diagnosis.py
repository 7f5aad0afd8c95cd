"""Measure why a trained quickstart draws what it draws (the numbers of docs/janus.md,
"Why the tiny model draws what it draws").

    .venv/bin/python scripts/quickstart_diagnosis.py runs/quickstart [--out diagnosis.json]

Reads `RUN/stage3` (the final model, its VQ tokenizer inside) and prints, as JSON:
the VQ ceiling (checker accuracy on held-out ground truth, rendered and VQ-reconstructed),
the condition's information (next-code loss with and without the caption), generation
accuracy over guidance scales (0 is the unconditional branch alone) and over temperature
and top-k at guidance 5 (all with Janus's constant guidance), and the positional spread of
16 samples of one-object prompts, at constant guidance 5 and at the model's own settings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import get_plugin_manager
from modal_core_images.evaluation.shapes_checker import check_prompt, detect_objects
from modal_core_images.evaluation.shapes_diagnosis import (
    condition_information,
    heldout_scenes,
    positional_diversity,
    reconstruction_ceiling,
)
from modal_core_images.evaluation.shapes_eval import evaluate_generation
from modal_core_images.modalities import GENERATION
from modal_core_images.shapes import COLOURS, SHAPES, caption, describe, render_scene

IMAGE_SIZE, GRID = 32, 8
GUIDANCE = (0.0, 1.0, 3.0, 5.0, 7.0)
SAMPLING_AT_CFG5 = ((1.0, None), (1.0, 16), (1.0, 4), (0.7, None), (0.5, None), (0.7, 16))
SPREAD_SAMPLES = 16
CONSTANT = {"cfg_schedule": "constant", "cfg_plausibility": 0}
"""Janus's guidance, whatever the checkpoint's defaults: the sweeps measure it."""


def _any_object_drawn(images: list) -> float:
    """Share of images in which the checker finds at least one object of a known shape."""
    return sum(any(obj.shape != "unknown" for obj in detect_objects(image)) for image in images) / len(images)


def diagnose(run: Path) -> dict:
    """Every measurement of the diagnosis on the quickstart run folder `run`."""
    started = time.perf_counter()
    pipeline = Pipeline.load(run / "stage3", plugins=get_plugin_manager())
    runtime = pipeline.modalities[GENERATION]
    scenes = heldout_scenes(256, IMAGE_SIZE, GRID)
    ceiling = reconstruction_ceiling(pipeline.model.encoders[GENERATION], runtime.processor, runtime.spec.to_output, scenes)
    information = condition_information(pipeline, [(caption(scene), render_scene(scene)) for scene in scenes])
    report: dict = {
        "vq_ceiling": {"ground_truth": ceiling.ground_truth, "reconstructed": ceiling.reconstructed, "scenes": ceiling.count},
        "condition_nats_per_code": {
            "conditional": round(information.conditional, 3),
            "unconditional": round(information.unconditional, 3),
            "gain": round(information.gain, 3),
        },
        "guidance": {},
        "sampling_at_cfg5": {},
    }
    for cfg in GUIDANCE:
        result = evaluate_generation(pipeline, per_prompt=4, two_object_prompts=20, cfg=cfg, **CONSTANT)
        report["guidance"][str(cfg)] = {
            "single": round(result.accuracy, 3),
            "two_object": round(result.two_object_accuracy, 3),
            "any_object": round(_any_object_drawn([drawn.image for drawn in result.images]), 3),
        }
    for temperature, top_k in SAMPLING_AT_CFG5:
        images = []
        single_ok = 0
        for colour in COLOURS:
            for shape in SHAPES:
                drawn = pipeline.generate(
                    describe(colour, shape), n=4, cfg=5.0, temperature=temperature, top_k=top_k or 0, seed=0, **CONSTANT
                )[0]
                single_ok += sum(check_prompt(image, colour, shape) for image in drawn)
                images += drawn
        report["sampling_at_cfg5"][f"t={temperature},top_k={top_k}"] = round(single_ok / len(images), 3)
    spread = positional_diversity(pipeline, IMAGE_SIZE, GRID, SPREAD_SAMPLES, cfg=5.0, temperature=1.0, top_k=0, **CONSTANT)
    report["positional_spread_cfg5_t1"] = spread.summary()
    report["model_settings"] = pipeline.generation.as_dict()
    report["positional_spread_model_settings"] = positional_diversity(pipeline, IMAGE_SIZE, GRID, SPREAD_SAMPLES).summary()
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a quickstart output folder (holds stage3/)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    report = diagnose(args.run)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
