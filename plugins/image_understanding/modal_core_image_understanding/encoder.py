"""The understanding encoder: transformers' SigLIP vision transformer, patch features out."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.models.janus.configuration_janus import JanusVisionConfig
from transformers.models.janus.modeling_janus import JanusVisionAlignerMLP, JanusVisionModel

from modal_core.errors import RecipeError


class SiglipImageEncoder(nn.Module):
    """SigLIP vision tower returning one feature per patch, (n, (size/patch)^2, width).

    Built from config values, or loaded from a local directory holding a Hugging Face
    SigLIP (vision or full) checkpoint. `vision` may also be transformers'
    `JanusVisionModel` (the SigLIP variant of the Janus checkpoints, exact GELU and an
    attention output called `projection_layer`), so Janus weights load key for key.
    """

    def __init__(self, vision: SiglipVisionModel | JanusVisionModel) -> None:
        super().__init__()
        self.vision = vision

    @classmethod
    def from_config(cls, **config) -> SiglipImageEncoder:
        """A randomly initialised tower; `config` are `SiglipVisionConfig` arguments."""
        # No attention-pooling head: Janus reads every patch feature, never the pooled one.
        return cls(SiglipVisionModel(SiglipVisionConfig(vision_use_head=False, **config)))

    @classmethod
    def janus_from_config(cls, *, intermediate_size: int, use_qk_norm: bool = False, **config) -> SiglipImageEncoder:
        """A randomly initialised Janus vision tower; `config` are `JanusVisionConfig`
        arguments (hidden_size, num_hidden_layers, num_attention_heads, image_size, patch_size)."""
        hidden_size = config["hidden_size"]
        if intermediate_size % hidden_size:
            raise RecipeError(
                f"modalities.image_understanding: intermediate_size {intermediate_size} must be a multiple "
                f"of width {hidden_size} for architecture janus"
            )
        janus = JanusVisionConfig(mlp_ratio=intermediate_size // hidden_size, use_qk_norm=use_qk_norm, hidden_act="gelu", **config)
        janus.num_image_tokens = (janus.image_size // janus.patch_size) ** 2
        return cls(JanusVisionModel(janus))

    @classmethod
    def from_directory(cls, path: str | Path) -> SiglipImageEncoder:
        """Load pretrained weights from a local directory (no downloads)."""
        if not (Path(path) / "config.json").is_file():
            raise RecipeError(f"modalities.image_understanding.path: {path} has no config.json of a SigLIP model")
        return cls(SiglipVisionModel.from_pretrained(str(path), local_files_only=True))

    @property
    def width(self) -> int:
        """Feature dimension of one patch."""
        return self.vision.config.hidden_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch features (n, N, width) of images (n, 3, size, size) normalised to [-1, 1]."""
        # Weights may be bf16/fp16 (a converted checkpoint); processors give float32.
        return self.vision(pixel_values=pixels.to(self.vision.dtype)).last_hidden_state


def build_adapter(width: int, hidden_size: int, depth: int) -> nn.Module:
    """Janus's understanding aligner: Linear, then (GELU, Linear) x (depth - 1)."""
    config = JanusVisionConfig(hidden_size=width, projection_dim=hidden_size, depth=depth, hidden_act="gelu")
    return JanusVisionAlignerMLP(config)
