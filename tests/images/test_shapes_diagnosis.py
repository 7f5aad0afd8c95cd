"""The diagnosis measurements: the checker on ground truth, the VQ ceiling of the
quickstart tokenizer, positional spread and the condition's information."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import run_cli, with_image_plugins

from modal_core import recipes
from modal_core.checkpoints.store import load_into, resolve_checkpoint
from modal_core.config.loader import load_recipe, modality_options
from modal_core.plugins import PluginManager
from modal_core_images.evaluation.shapes_diagnosis import (
    drawn_as_described,
    heldout_scenes,
    positional_spread,
    reconstruction_ceiling,
)
from modal_core_images.modalities import GENERATION
from modal_core_images.processing import ImageProcessor, tensor_to_image
from modal_core_images.shapes import Scene, ShapeObject, render_scene

IMAGE_SIZE, GRID = 32, 8


class _Identity(torch.nn.Module):
    """A lossless stand-in tokenizer: the ceiling must then equal the checker on ground truth."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes


class _Blank(_Identity):
    """A tokenizer that loses everything: decodes every image to the background."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.full_like(codes, 240 / 255)


def _to_output(pixels: torch.Tensor) -> list:
    return [tensor_to_image(image) for image in pixels]


def test_the_checker_judges_every_heldout_ground_truth_scene_right():
    scenes = heldout_scenes(200, IMAGE_SIZE, GRID)
    assert [len(s.objects) for s in scenes[:4]] == [1, 2, 1, 2]
    assert all(drawn_as_described(render_scene(scene), scene) for scene in scenes)


def test_a_swapped_caption_order_is_judged_wrong():
    scene = heldout_scenes(2, IMAGE_SIZE, GRID)[1]
    swapped = Scene(objects=tuple(reversed(scene.ordered())), image_size=IMAGE_SIZE)
    left, right = scene.ordered()
    mirrored = Scene(
        objects=(
            ShapeObject(left.colour, left.shape, right.centre, left.size),
            ShapeObject(right.colour, right.shape, left.centre, right.size),
        ),
        image_size=IMAGE_SIZE,
    )
    assert drawn_as_described(render_scene(swapped), scene)  # same objects, same places
    assert not drawn_as_described(render_scene(mirrored), scene)


def test_the_ceiling_of_a_lossless_and_of_a_blank_tokenizer():
    scenes = heldout_scenes(40, IMAGE_SIZE, GRID)
    processor = ImageProcessor(size=IMAGE_SIZE, pad_square=False)
    assert reconstruction_ceiling(_Identity(), processor, _to_output, scenes, batch=16).reconstructed == 1.0
    blank = reconstruction_ceiling(_Blank(), processor, _to_output, scenes, batch=16)
    assert (blank.ground_truth, blank.reconstructed, blank.count) == (1.0, 0.0, 40)


@pytest.mark.slow
def test_the_quickstart_vq_passes_the_checker_on_heldout_ground_truth(tmp_path):
    """The ceiling test: what the quickstart's tokenizer lets through, the checker accepts.

    Slow: it takes the shipped recipe's 1200 steps (about 3 minutes on 2 cores). After 800
    steps the result hung on floating-point luck: 0.94 trained with 2 threads, 0.985 with 1;
    after 1200 steps both pass all 200 scenes."""
    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    overrides = [f"output_dir={tmp_path / 'vq'}", "trainer.val_every_n_steps=0", "trainer.progress_bar=false"]
    recipe = load_recipe(recipes.find("quickstart/vq"), overrides, plugins)
    # Trained by the command in a fresh process, so no state an earlier test left in pytest's
    # process (once: tiny model sizes edited in a shared dict) can change what it learns.
    trained = run_cli("train", str(recipes.find("quickstart/vq")), *overrides)
    assert trained.returncode == 0, trained.stderr[-2000:]
    options = modality_options(recipe, plugins, GENERATION)
    spec = plugins.modality(GENERATION)
    tokenizer = spec.build_encoder(options)
    load_into(tokenizer, resolve_checkpoint(tmp_path / "vq"))
    tokenizer.eval()
    ceiling = reconstruction_ceiling(tokenizer, spec.build_processor(options), spec.to_output, heldout_scenes(200, IMAGE_SIZE, GRID))
    assert ceiling.ground_truth == 1.0
    assert ceiling.reconstructed >= 0.95


def _one_object(x: int, y: int) -> Scene:
    return Scene(objects=(ShapeObject("red", "square", (x, y), 16),), image_size=IMAGE_SIZE)


def test_positional_spread_counts_quadrants_and_thirds():
    # Centres 8, 16, 24 are the quickstart grid's; a box starting at 8 has its centre of mass at 15.5.
    images = [render_scene(_one_object(x, y)) for x, y in [(8, 8), (8, 8), (24, 8), (24, 24), (16, 16)]]
    images.append(render_scene(Scene(objects=(ShapeObject("blue", "square", (8, 8), 16),), image_size=IMAGE_SIZE)))
    spread = positional_spread(images, "red", "square")
    assert (spread.found, spread.total) == (5, 6)
    assert spread.quadrants == {0: 3, 1: 1, 3: 1}
    assert spread.thirds == {0: 2, 2: 1, 8: 1, 4: 1}
    assert spread.quadrants_covered == 3
    assert spread.quadrant_entropy == pytest.approx(-(0.6 * math.log2(0.6) + 2 * 0.2 * math.log2(0.2)))
    assert spread.thirds_entropy == pytest.approx(-(0.4 * math.log2(0.4) + 3 * 0.2 * math.log2(0.2)))
