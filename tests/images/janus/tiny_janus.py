"""A tiny random transformers Janus, saved the way the Hugging Face Hub ships Janus-Pro:
DeepSeek-style special-token names, sharded safetensors, processor and generation
config. It is the reference every Janus conversion test compares against."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from transformers import JanusForConditionalGeneration

from modal_core_images.janus.random_janus import PATCH, JanusSize, save_random_janus

IMAGE_SIZE = 32
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
TINY = JanusSize(
    hidden=64,
    layers=2,
    heads=4,
    kv_heads=2,
    intermediate=128,
    vocab=320,
    grid=IMAGE_SIZE // PATCH,
    codebook=64,
    vision_layers=2,
    vq_channel_multiplier=(1, 2),
    max_positions=256,
)


def save_tiny_janus(directory: Path, seed: int = 0, tied: bool = False) -> JanusForConditionalGeneration:
    """Save (sharded) a tiny random Janus and return it, loaded back, in eval mode."""
    save_random_janus(replace(TINY, tied=tied), directory, seed=seed, max_shard_size="300KB")
    return JanusForConditionalGeneration.from_pretrained(str(directory)).eval()


def sample_image(seed: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    """A random RGB image (already the model's size, so both processors only normalise)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
