"""Why a shapes model draws what it draws: the measurements behind the diagnosis in
docs/janus.md, each judged by the deterministic `shapes_checker`.

- `reconstruction_ceiling`: the checker's verdicts on held-out ground-truth scenes and on
  the same scenes passed through the VQ tokenizer (encode, decode). No generator can score
  above what its tokenizer lets the checker see, so the second number is the ceiling of
  generation accuracy.
- `condition_information`: the next-code loss of ground-truth codes with the caption and
  with the condition dropped (the unconditional branch that classifier-free guidance
  subtracts). Their difference is what the caption tells the model, in nats per code.
- `positional_spread`: where the prompted object lands in a set of images (quadrants and
  the 3 x 3 grid of thirds), with the entropy of both, to compare generations with the
  training distribution; `positional_diversity` measures it for every one-object prompt.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from modal_core.data.chat import caption_to_image
from modal_core.data.segments import Media
from modal_core.generation.pipeline import Pipeline
from modal_core_images.evaluation.shapes_checker import check_caption, check_prompt, detect_objects
from modal_core_images.modalities import GENERATION
from modal_core_images.shapes import COLOURS, SHAPES, Scene, caption, describe, render_scene, scene_for_index


def heldout_scenes(count: int, image_size: int, grid: int | None = None, seed: int = 99) -> list[Scene]:
    """`count` held-out scenes, one and two objects alternating (two-object pairs never seen in training)."""
    return [scene_for_index(index, seed, "heldout", image_size=image_size, num_objects=1 + index % 2, grid=grid) for index in range(count)]


def drawn_as_described(image: Image.Image, scene: Scene) -> bool:
    """The checker's verdict on `image` for `scene`'s caption: the object for one object,
    both objects in their left-to-right order for two."""
    if len(scene.objects) == 1:
        (obj,) = scene.objects
        return check_prompt(image, obj.colour, obj.shape)
    return check_caption(image, caption(scene))["position_ok"]


@dataclass(frozen=True)
class Ceiling:
    """Shares of scenes the checker judges right: rendered, and VQ-reconstructed."""

    ground_truth: float
    reconstructed: float
    count: int


def reconstruction_ceiling(
    tokenizer: torch.nn.Module,
    processor: Callable[[Image.Image], torch.Tensor],
    to_output: Callable[[torch.Tensor], list[Image.Image]],
    scenes: Sequence[Scene],
    batch: int = 64,
) -> Ceiling:
    """Judge every scene rendered and after `tokenizer.decode(tokenizer.encode(...))`;
    `processor` and `to_output` are the generation modality's pixel conversions."""
    rendered = [render_scene(scene) for scene in scenes]
    reconstructed: list[Image.Image] = []
    with torch.no_grad():
        for start in range(0, len(rendered), batch):
            pixels = torch.stack([processor(image) for image in rendered[start : start + batch]])
            reconstructed += to_output(tokenizer.decode(tokenizer.encode(pixels)))
    truth = sum(drawn_as_described(image, scene) for image, scene in zip(rendered, scenes))
    through_vq = sum(drawn_as_described(image, scene) for image, scene in zip(reconstructed, scenes))
    return Ceiling(truth / len(scenes), through_vq / len(scenes), len(scenes))


@dataclass(frozen=True)
class ConditionInformation:
    """Mean next-code cross-entropy (nats per code) of ground-truth images."""

    conditional: float
    unconditional: float

    @property
    def gain(self) -> float:
        """Nats per code the caption is worth: unconditional minus conditional loss."""
        return self.unconditional - self.conditional


def condition_information(pipeline: Pipeline, examples: Sequence[tuple[str, Image.Image]], batch: int = 32) -> ConditionInformation:
    """Teacher-forced loss of each (caption, image) example's image codes after its caption,
    and after the dropped condition the model was trained with (`cfg_dropout`) and that
    guidance subtracts."""
    totals = {True: [0.0, 0], False: [0.0, 0]}
    pipeline.model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            samples = [caption_to_image(text, Media(GENERATION, image, supervised=True), GENERATION) for text, image in chunk]
            for conditional in (True, False):
                rows = samples if conditional else [replace(sample, drop_condition=True) for sample in samples]
                output = pipeline.model(**pipeline.collator(rows).model_inputs())
                totals[conditional][0] += float(output.head_loss_sums[GENERATION])
                totals[conditional][1] += int(output.head_counts[GENERATION])
    return ConditionInformation(totals[True][0] / totals[True][1], totals[False][0] / totals[False][1])


@dataclass(frozen=True)
class PositionalSpread:
    """Where the prompted object's centre lies: counts per quadrant and per cell of the
    3 x 3 grid of thirds (row-major), and the entropy of each in bits."""

    quadrants: dict[int, int]
    thirds: dict[int, int]
    found: int
    total: int

    @property
    def quadrants_covered(self) -> int:
        return len(self.quadrants)

    @property
    def quadrant_entropy(self) -> float:
        return _entropy(self.quadrants)

    @property
    def thirds_entropy(self) -> float:
        return _entropy(self.thirds)


def positional_spread(images: Sequence[Image.Image], colour: str, shape: str) -> PositionalSpread:
    """Centres of the largest `colour` `shape` object in each image that has one."""
    quadrants: Counter[int] = Counter()
    thirds: Counter[int] = Counter()
    for image in images:
        matches = [obj for obj in detect_objects(image) if (obj.colour, obj.shape) == (colour, shape)]
        if not matches:
            continue
        x, y = max(matches, key=lambda obj: obj.area).centre
        width, height = image.size
        quadrants[2 * int(y >= height / 2) + int(x >= width / 2)] += 1
        thirds[3 * min(int(3 * y / height), 2) + min(int(3 * x / width), 2)] += 1
    return PositionalSpread(dict(quadrants), dict(thirds), sum(quadrants.values()), len(images))


def _entropy(counts: dict[int, int]) -> float:
    total = sum(counts.values())
    return -sum(n / total * math.log2(n / total) for n in counts.values()) if total else 0.0


@dataclass(frozen=True)
class Diversity:
    """Positional spread of `samples` draws of every one-object prompt, beside that of as
    many training scenes of each object (judged the same way)."""

    generated: list[PositionalSpread]
    training: list[PositionalSpread]
    samples: int

    def summary(self) -> dict[str, dict[str, float]]:
        """Per side: the share of prompts whose centres cover at least 3 of the 4 quadrants,
        the mean quadrants covered, the mean entropy (bits) over quadrants and over the
        3 x 3 thirds, and the share of images in which the object was found."""
        return {"generated": _summary(self.generated), "training": _summary(self.training)}


def _summary(spreads: list[PositionalSpread]) -> dict[str, float]:
    count = len(spreads)
    return {
        "share_covering_3_quadrants": round(sum(s.quadrants_covered >= 3 for s in spreads) / count, 3),
        "mean_quadrants_covered": round(sum(s.quadrants_covered for s in spreads) / count, 2),
        "mean_quadrant_entropy_bits": round(sum(s.quadrant_entropy for s in spreads) / count, 3),
        "mean_thirds_entropy_bits": round(sum(s.thirds_entropy for s in spreads) / count, 3),
        "object_found": round(sum(s.found for s in spreads) / sum(s.total for s in spreads), 3),
    }


def positional_diversity(
    pipeline: Pipeline, image_size: int, grid: int | None, samples: int = 16, seed: int = 0, **generation: Any
) -> Diversity:
    """Where `samples` draws of each "a <colour> <shape>" prompt put the object (one
    batch per prompt, seed `seed`; `generation`: `Pipeline.generate`'s guidance and
    sampling, default the model's), and where the first `samples` one-object training
    scenes of the same object put it."""
    by_object: dict[tuple[str, str], list[Scene]] = {(colour, shape): [] for colour in COLOURS for shape in SHAPES}
    index = 0
    while min(len(scenes) for scenes in by_object.values()) < samples:
        scene = scene_for_index(index, 0, "train", image_size, num_objects=1, grid=grid)
        by_object[(scene.objects[0].colour, scene.objects[0].shape)].append(scene)
        index += 1
    generated, training = [], []
    for (colour, shape), scenes in by_object.items():
        images = pipeline.generate(describe(colour, shape), n=samples, seed=seed, **generation)[0]
        generated.append(positional_spread(images, colour, shape))
        training.append(positional_spread([render_scene(s) for s in scenes[:samples]], colour, shape))
    return Diversity(generated, training, samples)
