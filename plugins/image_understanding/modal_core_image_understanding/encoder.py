"""The understanding encoder: any transformers vision transformer, patch features out.

A tower is built from its config through `AutoConfig`/`AutoModel` (SigLIP, CLIP vision,
DINOv2, or any model type transformers knows), or loaded from a local folder. The
encoder reads one layer's hidden states and keeps the patch tokens, optionally with the
CLS token in front; tokens a tower adds besides (DINOv2's registers) are dropped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.models.janus.configuration_janus import JanusVisionConfig
from transformers.models.janus.modeling_janus import JanusVisionAlignerMLP, JanusVisionModel

from modal_core.errors import RecipeError


class VisionTowerEncoder(nn.Module):
    """A vision transformer returning one feature per patch, (n, (size/patch)^2, width),
    or with `keep_cls` the CLS feature first, (n, 1 + (size/patch)^2, width).

    `feature_layer` None reads the tower's output (`last_hidden_state`, after its final
    norm, what SigLIP/Janus models were trained on here); an int k reads
    `hidden_states[k]` (-2: the penultimate layer, as LLaVA does). `vision` may also be
    transformers' `JanusVisionModel` (the SigLIP variant of the Janus checkpoints), so
    Janus weights load key for key.
    """

    def __init__(self, vision: nn.Module, feature_layer: int | None = None, keep_cls: bool = False) -> None:
        super().__init__()
        self.vision = vision
        self.feature_layer = feature_layer
        self.keep_cls = keep_cls

    @property
    def width(self) -> int:
        """Feature dimension of one patch."""
        return self.vision.config.hidden_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features (n, N, width) of images (n, 3, size, size) normalised to [-1, 1]."""
        # Weights may be bf16/fp16 (a converted checkpoint); processors give float32.
        hidden_states = self.feature_layer is not None
        output = self.vision(pixel_values=pixels.to(self.vision.dtype), output_hidden_states=hidden_states)
        states = output.hidden_states[self.feature_layer] if hidden_states else output.last_hidden_state  # (n, tokens, width)
        patch = self.vision.config.patch_size
        patches = (pixels.shape[-2] // patch) * (pixels.shape[-1] // patch)
        prefix = states.shape[1] - patches  # CLS and register tokens come before the patches
        if not self.keep_cls:
            return states[:, prefix:]
        if prefix < 1:
            raise RecipeError(
                f"modalities.image_understanding.encoder.select: cls+patch, but {type(self.vision).__name__} has no CLS token"
            )
        return torch.cat([states[:, :1], states[:, prefix:]], dim=1)


def tower_config(model_type: str, overrides: dict, image_size: int, patch_size: int, sizes: dict[str, int]) -> PretrainedConfig:
    """The config of a randomly initialised tower of `model_type` (a transformers model type,
    e.g. `siglip_vision_model`, `clip_vision_model`, `dinov2`): `sizes` (hidden_size,
    num_hidden_layers, num_attention_heads, intermediate_size) where the type has them,
    then `overrides` (the recipe's `encoder.config`)."""
    keys = {"image_size": image_size, "patch_size": patch_size, **sizes}
    if model_type == "dinov2" and "intermediate_size" in keys:  # DINOv2 names its MLP width as a ratio
        intermediate = keys.pop("intermediate_size")
        if intermediate % keys["hidden_size"]:
            raise RecipeError(
                f"modalities.image_understanding: intermediate_size {intermediate} must be a multiple "
                f"of width {keys['hidden_size']} for dinov2"
            )
        keys["mlp_ratio"] = intermediate // keys["hidden_size"]
    if model_type == "siglip_vision_model":
        # No attention-pooling head: Janus reads every patch feature, never the pooled one.
        keys["vision_use_head"] = False
    try:
        return AutoConfig.for_model(model_type, **{**keys, **overrides})
    except ValueError as error:
        raise RecipeError(f"modalities.image_understanding.encoder: {error}") from error


def tower_from_config(config: PretrainedConfig) -> nn.Module:
    """A randomly initialised vision tower of `config`, through `AutoModel`."""
    return AutoModel.from_config(config)


def janus_tower(*, intermediate_size: int, use_qk_norm: bool = False, **config) -> JanusVisionModel:
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
    return JanusVisionModel(janus)


def saved_config(path: str | Path) -> PretrainedConfig:
    """The vision config saved in a local folder (the `vision_config` of a full SigLIP or
    CLIP checkpoint), read without weights or downloads."""
    if not (Path(path) / "config.json").is_file():
        raise RecipeError(f"modalities.image_understanding.encoder.path: {path} has no config.json of a transformers vision model")
    config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    return getattr(config, "vision_config", None) or config


def tower_from_directory(path: str | Path) -> nn.Module:
    """The pretrained vision tower in a local folder (no downloads): a vision model, or
    the vision half of a full SigLIP/CLIP checkpoint."""
    saved_config(path)  # a clear error for a folder without config.json
    full = AutoModel.from_pretrained(str(path), local_files_only=True)
    if getattr(full.config, "vision_config", None) is None:
        return full
    # A two-tower checkpoint: its vision half as the standalone model class of its config.
    vision = AutoModel.from_config(full.config.vision_config)
    vision.load_state_dict(full.vision_model.state_dict())
    return vision


def build_adapter(width: int, hidden_size: int, depth: int) -> nn.Module:
    """Janus's understanding aligner: Linear, then (GELU, Linear) x (depth - 1)."""
    config = JanusVisionConfig(hidden_size=width, projection_dim=hidden_size, depth=depth, hidden_act="gelu")
    return JanusVisionAlignerMLP(config)
