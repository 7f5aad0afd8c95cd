"""With `preprocess: transformers`, images that are not already at the model's size reach a
converted Janus exactly as transformers' `JanusImageProcessor` prepares them: longer side
resized (shorter side rounded), then padded to a square with the background grey. (The
converter's default, `official`, is checked against the official processor in
tests/images/test_janus_official_preprocessing.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import JanusProcessor

from modal_core.config.loader import load_recipe, modality_options
from modal_core.generation.pipeline import Pipeline
from modal_core_images.processing import image_to_tensor

from .sft_data import QUESTION, understanding_logits
from .tiny_janus import IMAGE_SIZE

OFFICIAL_PROMPT = f"<|User|>: <image_placeholder>\n{QUESTION}\n\n<|Assistant|>:"


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random picture: bicubic resampling has real work to do on it."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    return coarse.resize((width, height), Image.Resampling.BILINEAR)


@pytest.mark.parametrize("size", [(71, 23), (19, 50), (100, 64)])
def test_pixels_equal_janus_image_processor(converted, janus_plugins, size):
    _, hf_dir, checkpoint = converted
    options = modality_options(load_recipe(checkpoint / "recipe.yaml", plugins=janus_plugins), janus_plugins, "image_understanding")
    assert options.preprocess == "official"  # the converter's default
    processor = janus_plugins.modality("image_understanding").build_processor(dataclasses.replace(options, preprocess="transformers"))
    image = _photo(*size, seed=sum(size))
    ours = processor(image)  # (3, H, W)
    theirs = JanusProcessor.from_pretrained(str(hf_dir)).image_processor(image, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == theirs.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert (ours - theirs).abs().max() <= 1e-6
    padded_first = image_to_tensor(image, IMAGE_SIZE, pad_square=True, preprocess="modal-core")
    assert (padded_first - theirs).abs().max() > 0.05  # the other order is measurably different


def test_understanding_logits_equal_transformers_on_a_wide_image(converted, janus_plugins):
    reference, hf_dir, checkpoint = converted
    image = _photo(90, 37, seed=3)
    inputs = JanusProcessor.from_pretrained(str(hf_dir))(text=OFFICIAL_PROMPT, images=image, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).logits
    ours = understanding_logits(Pipeline.load(checkpoint, plugins=janus_plugins), image)
    assert (ours - expected).abs().max() <= 1e-4
