"""Registers the `vq_understanding` modality: the generation VQ tokenizer as the
understanding encoder, so one tokenizer serves both tasks (Chameleon-style; the shared
arms of the Janus ablation). Its options are the tokenizer's, pointing at the same
checkpoint as `modalities.vq_generation`, plus which of the tokenizer's outputs the
understanding adapter reads."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from modal_core.errors import RecipeError
from modal_core.modality import ModalitySpec
from modal_core_images.modalities import SHARED_UNDERSTANDING
from modal_core_vq_generation.plugin import VQ_GENERATION, VQGenerationOptions, build_tokenizer

FEATURES = ("quantized", "codes")


@dataclass
class VQUnderstandingOptions(VQGenerationOptions):
    """Recipe options of `modalities.vq_understanding`: the tokenizer's (set them, and
    `tokenizer_path`, as in `modalities.vq_generation` to share its tokenizer) and `features`."""

    features: str = "quantized"
    """What the understanding adapter reads: `quantized` (the code vectors the VQ decoder
    reads, (N, code_dim) an image, through an MLP) or `codes` (the code indices, embedded
    by the adapter's own table, then an MLP, as the generation adapter does)."""


class VQFeatureEncoder(nn.Module):
    """A VQ tokenizer read by the understanding path. The tokenizer stays frozen here (its
    `encode` takes no gradient): it is trained by its own `modality_tokenizer` recipe."""

    def __init__(self, tokenizer: nn.Module, features: str) -> None:
        super().__init__()
        if features not in FEATURES:
            raise RecipeError(f"modalities.{SHARED_UNDERSTANDING}.features: expected one of {', '.join(FEATURES)}, got {features!r}")
        self.tokenizer, self.features = tokenizer, features

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, H, W) -> code vectors (n, N, code_dim), or codes (n, N); an input
        modality's positions are never targets, so codes only reach the adapter."""
        return self.tokenizer.quantized(pixels) if self.features == "quantized" else self.tokenizer.encode(pixels)


def _encoder(options: VQUnderstandingOptions) -> VQFeatureEncoder:
    return VQFeatureEncoder(build_tokenizer(options), options.features)


def _adapter(options: VQUnderstandingOptions, hidden: int) -> nn.Module:
    from modal_core_vq_generation.adapter import CodeEmbeddingAdapter, build_vector_adapter

    if options.features == "codes":
        return CodeEmbeddingAdapter(options.codebook_size, options.code_dim, hidden, options.adapter_depth)
    return build_vector_adapter(options.code_dim, hidden, options.adapter_depth)


VQ_UNDERSTANDING = ModalitySpec(
    name=SHARED_UNDERSTANDING,
    direction="input",
    options=VQUnderstandingOptions,
    build_encoder=_encoder,
    build_adapter=_adapter,
    # The same images, codes and special tokens as the generation modality.
    build_processor=VQ_GENERATION.build_processor,
    num_positions=VQ_GENERATION.num_positions,
    payload_shape=VQ_GENERATION.payload_shape,
    begin_token=VQ_GENERATION.begin_token,
    end_token=VQ_GENERATION.end_token,
    placeholder_token=VQ_GENERATION.placeholder_token,
    # A flag of its own (`--image` belongs to image_understanding); the same Pipeline keyword,
    # as a model has only one of the two.
    cli_flag="vq-image",
    keyword="image",
    weight_paths=("tokenizer_path",),
    description="the generation VQ tokenizer's codes or code vectors + an own adapter (shared-encoder understanding)",
)
