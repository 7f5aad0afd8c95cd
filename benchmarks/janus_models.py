"""Random transformers Janus models built from config (no downloads) and the same
weights converted to modal-core, for benchmarks that compare the two.

`SIZES` (from `modal_core_images.janus.random_janus`) names the configurations;
`janus_pair(size, root)` saves a random `JanusForConditionalGeneration` to `root/hf`
with `save_random_janus`, converts it with `modal_core_images.janus.from_hf_janus` to
`root/modal` and returns both models ready for inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import PluginManager, get_plugin_manager
from modal_core_images.janus import from_hf_janus
from modal_core_images.janus.random_janus import SIZES, save_random_janus


@dataclass
class JanusPair:
    """The same random weights as a transformers Janus and as a modal-core pipeline."""

    reference: JanusForConditionalGeneration
    processor: JanusProcessor
    pipeline: Pipeline
    image_tokens: int


def janus_pair(
    size: str, root: Path, dtype: torch.dtype = torch.float32, device: str = "cpu", plugins: PluginManager | None = None
) -> JanusPair:
    """Save a random transformers Janus of `SIZES[size]` under `root/hf`, convert it to
    `root/modal` with `from_hf_janus`, and load both on `device` in `dtype`."""
    shape = SIZES[size]
    save_random_janus(shape, root / "hf", seed=0)
    reference = JanusForConditionalGeneration.from_pretrained(str(root / "hf")).eval()
    processor = JanusProcessor.from_pretrained(str(root / "hf"))
    from_hf_janus(root / "hf", root / "modal", plugins=plugins or get_plugin_manager())
    pipeline = Pipeline.load(root / "modal", plugins=plugins or get_plugin_manager(), device=device)
    pipeline.model.to(dtype)
    reference.to(device=device, dtype=dtype)
    return JanusPair(reference, processor, pipeline, shape.grid**2)
