"""Registers the `image_understanding` modality."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from modal_core.errors import RecipeError
from modal_core.hookspecs import hookimpl
from modal_core.modality import ModalitySpec
from modal_core_images.modalities import UNDERSTANDING
from modal_core_images.processing import PREPROCESS_MODES, ImageProcessor

# The encoder module imports transformers' vision models (seconds): it is imported when a
# model is built, so listing plugins or starting the CLI stays fast.

IMAGE_PLACEHOLDER = "<image_placeholder>"
BEGIN_OF_IMAGE = "<begin_of_image>"
END_OF_IMAGE = "<end_of_image>"


@dataclass
class ImageUnderstandingOptions:
    """Recipe options of `modalities.image_understanding`."""

    architecture: str = "siglip"
    """Vision tower: `siglip` (transformers' SiglipVisionModel, loads SigLIP checkpoints)
    or `janus` (transformers' JanusVisionModel, the tower of converted Janus checkpoints)."""
    path: Optional[str] = None
    """Local directory of a pretrained SigLIP; the sizes below must match its config."""
    image_size: int = 384
    """Input side in pixels (Janus: 384)."""
    patch_size: int = 16
    """Patch side in pixels; features per image = (image_size / patch_size)^2."""
    width: int = 1024
    """Transformer width of the vision tower (SigLIP-L: 1024)."""
    num_layers: int = 24
    """Transformer layers of the vision tower."""
    num_heads: int = 16
    """Attention heads of the vision tower."""
    intermediate_size: int = 4096
    """MLP width of the vision tower."""
    use_qk_norm: bool = False
    """Layer-normalise queries and keys (architecture `janus` only; Janus checkpoints: false)."""
    adapter_depth: int = 2
    """Linear layers in the adapter MLP (Janus: 2, with GELU between)."""
    pad_to_square: bool = True
    """Pad images to a square with grey (127, 127, 127), keeping their aspect ratio, as Janus does
    (false: stretch them; preprocess modal-core only)."""
    preprocess: str = "modal-core"
    """How an image becomes the tower's input: `modal-core` (pad to a square, then resize; the
    models trained here), `official` (bit-exact to the official Janus VLMImageProcessor:
    plain RGB conversion, longer side resized with the shorter side floored, then padded) or
    `transformers` (transformers' JanusImageProcessor: the shorter side rounded). Converted
    Janus checkpoints default to `official`, the processing behind the published numbers."""
    max_pixels: int = 64_000_000
    """Refuse images with more pixels than this (decompression-bomb guard)."""


def _encoder(options: ImageUnderstandingOptions):
    from modal_core_image_understanding.encoder import SiglipImageEncoder

    if options.architecture not in ("siglip", "janus"):
        raise RecipeError(f"modalities.image_understanding.architecture: expected 'siglip' or 'janus', got {options.architecture!r}")
    if options.architecture == "janus":
        if options.path:
            raise RecipeError(
                "modalities.image_understanding: architecture janus takes its weights from a converted checkpoint (init_from), not `path`"
            )
        return SiglipImageEncoder.janus_from_config(**_tower_sizes(options), use_qk_norm=options.use_qk_norm)
    if options.use_qk_norm:
        raise RecipeError("modalities.image_understanding.use_qk_norm: only architecture janus has a qk-norm")
    if options.path:
        encoder = SiglipImageEncoder.from_directory(options.path)
        config = encoder.vision.config
        # The recipe must state the sizes too: it is what rebuilds the model from a checkpoint.
        loaded = {"image_size": config.image_size, "patch_size": config.patch_size, "width": config.hidden_size}
        wrong = {key: value for key, value in loaded.items() if getattr(options, key) != value}
        if wrong:
            raise RecipeError(f"modalities.image_understanding: {options.path} has {wrong}; set these values in the recipe")
        return encoder
    return SiglipImageEncoder.from_config(**_tower_sizes(options))


def _tower_sizes(options: ImageUnderstandingOptions) -> dict[str, int]:
    """The vision tower's architecture keywords from the recipe options."""
    return {
        "image_size": options.image_size,
        "patch_size": options.patch_size,
        "hidden_size": options.width,
        "num_hidden_layers": options.num_layers,
        "num_attention_heads": options.num_heads,
        "intermediate_size": options.intermediate_size,
    }


def _adapter(options: ImageUnderstandingOptions, hidden: int):
    from modal_core_image_understanding.encoder import build_adapter

    return build_adapter(options.width, hidden, options.adapter_depth)


def _processor(options: ImageUnderstandingOptions) -> ImageProcessor:
    if options.preprocess not in PREPROCESS_MODES:
        raise RecipeError(
            f"modalities.image_understanding.preprocess: expected one of {', '.join(PREPROCESS_MODES)}, got {options.preprocess!r}"
        )
    if options.preprocess != "modal-core" and not options.pad_to_square:
        raise RecipeError(f"modalities.image_understanding: preprocess {options.preprocess} always pads; pad_to_square must be true")
    return ImageProcessor(
        size=options.image_size, pad_square=options.pad_to_square, max_pixels=options.max_pixels, preprocess=options.preprocess
    )


IMAGE_UNDERSTANDING = ModalitySpec(
    name=UNDERSTANDING,
    direction="input",
    options=ImageUnderstandingOptions,
    build_encoder=_encoder,
    build_adapter=_adapter,
    build_processor=_processor,
    num_positions=lambda options: (options.image_size // options.patch_size) ** 2,
    payload_shape=lambda options: (3, options.image_size, options.image_size),
    begin_token=BEGIN_OF_IMAGE,
    end_token=END_OF_IMAGE,
    placeholder_token=IMAGE_PLACEHOLDER,
    cli_flag="image",
    keyword="image",
    weight_paths=("path",),
    description="SigLIP vision transformer + MLP adapter; answered by the text head",
)


@hookimpl
def modal_core_modalities() -> list[ModalitySpec]:
    return [IMAGE_UNDERSTANDING]


@hookimpl
def modal_core_block_classes() -> list[type]:
    # The SigLIP tower's transformer layers: FSDP units and activation-checkpointing boundaries.
    from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

    return [SiglipEncoderLayer]
