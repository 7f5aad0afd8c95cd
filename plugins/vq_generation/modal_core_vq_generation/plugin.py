"""Registers the `vq_generation` modality: images the model draws as VQ codes (and
`vq_understanding`, the same tokenizer read by the understanding path: understanding.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from modal_core.checkpoints.store import check_fits, load_into, load_model_state
from modal_core.hookspecs import hookimpl
from modal_core.modality import ModalitySpec
from modal_core_images.modalities import GENERATION
from modal_core_images.processing import ImageProcessor, save_image_grid, tensor_to_image

# The tokenizer and adapter modules import transformers' Janus VQ-VAE (seconds): they are
# imported when a model is built, so listing plugins or starting the CLI stays fast.

BEGIN_OF_IMAGE = "<begin_of_image>"
END_OF_IMAGE = "<end_of_image>"
IMAGE_PLACEHOLDER = "<image_placeholder>"


@dataclass
class VQGenerationOptions:
    """Recipe options of `modalities.vq_generation`."""

    architecture: str = "janus"
    """VQ encoder/decoder: `janus` (transformers' JanusVQVAE, loads Janus weights) or
    `compact` (a small conv stack that trains fast on tiny images)."""
    tokenizer_path: Optional[str] = None
    """Checkpoint directory of a trained VQ tokenizer (from a `task: modality_tokenizer`
    recipe). Null: a randomly initialised tokenizer (only useful to train one)."""
    image_size: int = 384
    """Image side in pixels (Janus: 384)."""
    codebook_size: int = 16384
    """Number of codes (Janus: 16384)."""
    code_dim: int = 8
    """Dimension of one code vector (Janus: 8)."""
    base_channels: int = 128
    """Channels of the first VQ encoder level (a multiple of 32)."""
    channel_multiplier: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    """Channel multiplier per level; len - 1 halvings, so 5 levels downsample 16x."""
    num_res_blocks: int = 2
    """Residual blocks per level."""
    latent_channels: int = 256
    """Channels before the 1x1 projection to code_dim."""
    commitment_beta: float = 0.25
    """Weight of the commitment loss when training the tokenizer."""
    adapter_depth: int = 2
    """Linear layers of the generation adapter MLP."""
    semantic_teacher: Optional[str] = None
    """Train a semantic tokenizer: a modal-core checkpoint (or run directory) whose
    `image_understanding` encoder, frozen, gives the features a semantic decoder regresses
    from the codes (Janus appendix). Set only in `modality_tokenizer` recipes; null: plain VQ."""
    semantic_weight: float = 1.0
    """Weight of the semantic loss beside the pixel and VQ losses."""
    semantic_loss: str = "cosine"
    """`cosine` (1 - cosine similarity) or `l2` (squared error) to the teacher's features."""


def build_tokenizer(options: VQGenerationOptions):
    """The VQ tokenizer (`VQImageTokenizer`) described by `options`, with trained weights if a
    path is given; a `SemanticVQTokenizer` when `semantic_teacher` is set."""
    from modal_core_vq_generation.semantic import SEMANTIC_DECODER
    from modal_core_vq_generation.tokenizer import VQImageTokenizer

    sizes = dict(
        image_size=options.image_size,
        codebook_size=options.codebook_size,
        code_dim=options.code_dim,
        base_channels=options.base_channels,
        channel_multiplier=tuple(options.channel_multiplier),
        num_res_blocks=options.num_res_blocks,
        latent_channels=options.latent_channels,
        commitment_beta=options.commitment_beta,
        architecture=options.architecture,
    )
    if options.semantic_teacher:
        tokenizer = _semantic_tokenizer(options, sizes)
        if options.tokenizer_path:
            load_into(tokenizer, Path(options.tokenizer_path).expanduser())
        return tokenizer
    tokenizer = VQImageTokenizer(**sizes)
    if options.tokenizer_path:
        path = Path(options.tokenizer_path).expanduser()
        state = load_model_state(path)
        # A semantic tokenizer's checkpoint also holds its semantic decoder: it only trained the codes.
        kept = {key: value for key, value in state.items() if not key.startswith(f"{SEMANTIC_DECODER}.")}
        check_fits(tokenizer, kept, path)
        tokenizer.load_state_dict(kept)
    return tokenizer


def _semantic_tokenizer(options: VQGenerationOptions, sizes: dict):
    """A `SemanticVQTokenizer` regressing the `image_understanding` features of the
    checkpoint `options.semantic_teacher`, whose images must have the tokenizer's size."""
    import torch

    from modal_core.errors import RecipeError
    from modal_core.generation.pipeline import Pipeline
    from modal_core_images.modalities import UNDERSTANDING
    from modal_core_vq_generation.semantic import SemanticVQTokenizer

    teacher = Pipeline.load(Path(options.semantic_teacher).expanduser())
    if UNDERSTANDING not in teacher.modalities:
        raise RecipeError(f"modalities.{GENERATION}.semantic_teacher: {options.semantic_teacher} has no {UNDERSTANDING} encoder")
    shape = teacher.modalities[UNDERSTANDING].payload_shape
    if tuple(shape) != (3, options.image_size, options.image_size):
        raise RecipeError(
            f"modalities.{GENERATION}.semantic_teacher: its {UNDERSTANDING} images are {tuple(shape)}, the tokenizer's "
            f"(3, {options.image_size}, {options.image_size}); the teacher must see the tokenizer's images"
        )
    encoder = teacher.model.encoders[UNDERSTANDING]
    with torch.no_grad():
        _, positions, width = encoder.encode(torch.zeros(1, *shape)).shape
    return SemanticVQTokenizer(
        teacher=encoder,
        teacher_grid=round(positions**0.5),
        teacher_width=width,
        semantic_weight=options.semantic_weight,
        semantic_loss=options.semantic_loss,
        **sizes,
    )


def _num_positions(options: VQGenerationOptions) -> int:
    downsample = 2 ** (len(options.channel_multiplier) - 1)
    return (options.image_size // downsample) ** 2


def _adapter(options: VQGenerationOptions, hidden: int):
    from modal_core_vq_generation.adapter import CodeEmbeddingAdapter

    return CodeEmbeddingAdapter(options.codebook_size, options.code_dim, hidden, options.adapter_depth)


def _head(options: VQGenerationOptions, hidden: int):
    from modal_core_vq_generation.adapter import build_image_head

    return build_image_head(options.codebook_size, options.code_dim, hidden)


VQ_GENERATION = ModalitySpec(
    name=GENERATION,
    direction="output",
    options=VQGenerationOptions,
    build_encoder=build_tokenizer,
    build_adapter=_adapter,
    build_head=_head,
    build_processor=lambda o: ImageProcessor(size=o.image_size, pad_square=False),
    num_positions=_num_positions,
    payload_shape=lambda options: (3, options.image_size, options.image_size),
    begin_token=BEGIN_OF_IMAGE,
    end_token=END_OF_IMAGE,
    placeholder_token=IMAGE_PLACEHOLDER,
    to_output=lambda pixels: [tensor_to_image(image) for image in pixels],
    save_preview=lambda images, captions, path: save_image_grid(images, path, columns=8, captions=captions),
    weight_paths=("tokenizer_path", "semantic_teacher"),
    description="VQ image tokenizer + generation adapter + image head (text-to-image)",
)


@hookimpl
def modal_core_modalities() -> list[ModalitySpec]:
    from modal_core_vq_generation.understanding import VQ_UNDERSTANDING

    return [VQ_GENERATION, VQ_UNDERSTANDING]
