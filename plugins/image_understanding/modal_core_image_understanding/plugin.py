"""Registers the `image_understanding` modality."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from modal_core.errors import RecipeError
from modal_core.hookspecs import hookimpl
from modal_core.modality import ModalitySpec
from modal_core_images.modalities import UNDERSTANDING
from modal_core_images.processing import PREPROCESS_MODES, ImageProcessor
from modal_core_images.tiling import ROW_END, TILE_SEPARATOR, TiledImageProcessor, allowed_grids, tile_layout

# The encoder module imports transformers' vision models (seconds): it is imported when a
# model is built, so listing plugins or starting the CLI stays fast.

IMAGE_PLACEHOLDER = "<image_placeholder>"
BEGIN_OF_IMAGE = "<begin_of_image>"
END_OF_IMAGE = "<end_of_image>"


@dataclass
class EncoderOptions:
    """Recipe options of `modalities.image_understanding.encoder`: which vision tower, and
    which of its features the adapter reads."""

    type: Optional[str] = None
    """`siglip`, `clip` (CLIP's vision tower), `dinov2`, or `auto` (any transformers model
    type named by `config.model_type`, or whatever model `path` holds), all built through
    transformers' AutoConfig/AutoModel; or `janus` (transformers' JanusVisionModel).
    None: `architecture` decides (recipes written before this block)."""
    path: Optional[str] = None
    """Local folder of a pretrained tower (a vision model or a full SigLIP/CLIP checkpoint);
    None: `image_understanding.path`, else random weights of the recipe's sizes."""
    feature_layer: Optional[int] = None
    """Which hidden states are the features: None the tower's output (after its final
    norm), an index into its hidden states otherwise (-2: the penultimate layer, LLaVA's)."""
    select: str = "patch"
    """`patch`: one feature per patch; `cls+patch`: the CLS feature first, then the patches
    (CLIP, DINOv2). Register tokens are always dropped."""
    config: dict[str, Any] = field(default_factory=dict)
    """Further config keys of the tower (`auto`: its `model_type`, and all its sizes); they
    override the sizes above, and the adapter reads the width they give."""


@dataclass
class TilingOptions:
    """Recipe options of `modalities.image_understanding.tiling`: dynamic high resolution."""

    enabled: bool = False
    """Cut each image into a grid of `image_size` tiles plus a thumbnail (see docs/high-resolution.md)."""
    max_tiles: int = 6
    """Most tiles of a grid (the thumbnail comes on top)."""
    min_tiles: int = 1
    """Fewest tiles of a grid (1 allows the untiled 1 x 1 grid, the thumbnail alone)."""


@dataclass
class ImageUnderstandingOptions:
    """Recipe options of `modalities.image_understanding`."""

    architecture: str = "siglip"
    """Vision tower: `siglip` (transformers' SiglipVisionModel, loads SigLIP checkpoints)
    or `janus` (transformers' JanusVisionModel, the tower of converted Janus checkpoints);
    `encoder.type` names more families."""
    path: Optional[str] = None
    """Local directory of a pretrained SigLIP; the sizes below must match its config."""
    image_size: int = 384
    """Input side in pixels (Janus: 384); with tiling, the side of one tile."""
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
    encoder: EncoderOptions = field(default_factory=EncoderOptions)
    """The vision tower's family and feature selection."""
    tiling: TilingOptions = field(default_factory=TilingOptions)
    """Dynamic high resolution: grids of tiles plus a thumbnail."""


SELECTIONS = ("patch", "cls+patch")
"""Which tokens of a layer become features: the patches, or the CLS token then the patches."""
FAMILIES = {"siglip": "siglip_vision_model", "clip": "clip_vision_model", "dinov2": "dinov2"}
"""Encoder types with the transformers model type of their vision tower."""
TYPES = (*FAMILIES, "auto", "janus")


def _type(options: ImageUnderstandingOptions) -> str:
    chosen = options.encoder.type or options.architecture
    if options.architecture not in ("siglip", "janus"):
        raise RecipeError(f"modalities.image_understanding.architecture: expected 'siglip' or 'janus', got {options.architecture!r}")
    if chosen not in TYPES:
        raise RecipeError(f"modalities.image_understanding.encoder.type: expected one of {', '.join(TYPES)}, got {chosen!r}")
    if options.encoder.select not in SELECTIONS:
        raise RecipeError(
            f"modalities.image_understanding.encoder.select: expected one of {', '.join(SELECTIONS)}, got {options.encoder.select!r}"
        )
    if options.use_qk_norm and chosen != "janus":
        raise RecipeError("modalities.image_understanding.use_qk_norm: only architecture janus has a qk-norm")
    return chosen


def _path(options: ImageUnderstandingOptions) -> str | None:
    if options.path and options.encoder.path and options.path != options.encoder.path:
        raise RecipeError("modalities.image_understanding: path and encoder.path name different folders; set one")
    return options.encoder.path or options.path


def _config(options: ImageUnderstandingOptions):
    """The tower's config, as the options describe it (for `auto` without `path`:
    `encoder.config` alone, which must name the model type)."""
    from modal_core_image_understanding.encoder import tower_config

    kind = _type(options)
    overrides = dict(options.encoder.config)
    if kind == "auto":
        if "model_type" not in overrides:
            raise RecipeError("modalities.image_understanding.encoder: type auto needs a path or config.model_type")
        return tower_config(overrides.pop("model_type"), overrides, options.image_size, options.patch_size, {})
    return tower_config(FAMILIES[kind], overrides, options.image_size, options.patch_size, _tower_sizes(options))


def _encoder(options: ImageUnderstandingOptions):
    from modal_core_image_understanding.encoder import VisionTowerEncoder, janus_tower, tower_from_config, tower_from_directory

    kind, path = _type(options), _path(options)
    if kind == "janus":
        if path:
            raise RecipeError(
                "modalities.image_understanding: architecture janus takes its weights from a converted checkpoint (init_from), not `path`"
            )
        tower = janus_tower(**_tower_sizes(options), use_qk_norm=options.use_qk_norm)
    elif path:
        tower = tower_from_directory(path)
        _check_saved(options, path, tower.config)
    else:
        tower = tower_from_config(_checked(options, _config(options)))
    return VisionTowerEncoder(tower, options.encoder.feature_layer, keep_cls=options.encoder.select == "cls+patch")


def _checked(options: ImageUnderstandingOptions, config):
    """`config`, whose image and patch sizes must be the recipe's (the processor and the
    number of positions follow the recipe)."""
    wrong = {key: getattr(config, key) for key in ("image_size", "patch_size") if getattr(config, key, None) != getattr(options, key)}
    if wrong:
        raise RecipeError(f"modalities.image_understanding.encoder: the tower's config has {wrong}; set image_size and patch_size to match")
    return config


def _check_saved(options: ImageUnderstandingOptions, path: str, saved) -> None:
    """A pretrained tower must be the one the options describe: a checkpoint of this model
    rebuilds the tower from the recipe alone (its weights come from the checkpoint)."""
    described = _config(options).to_dict()
    # File bookkeeping, and the backbone-API keys transformers derives from the layer count.
    bookkeeping = {"architectures", "transformers_version", "_name_or_path", "torch_dtype", "dtype", "model_type"}
    bookkeeping |= {"stage_names", "out_features", "out_indices"}
    wrong = {key: value for key, value in saved.to_dict().items() if key not in bookkeeping and described.get(key, value) != value}
    if wrong:
        raise RecipeError(
            f"modalities.image_understanding: {path} has {wrong}; set these values in the recipe "
            "(image_size, patch_size, width, num_layers, num_heads, intermediate_size, or encoder.config)"
        )


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

    # The adapter reads the tower's width, wherever it comes from (the sizes, encoder.config).
    width = options.width if _type(options) == "janus" else _config(options).hidden_size
    return build_adapter(width, hidden, options.adapter_depth)


def _per_tile(options: ImageUnderstandingOptions) -> int:
    """Features of one image (one tile when tiling)."""
    return (options.image_size // options.patch_size) ** 2 + (options.encoder.select == "cls+patch")


def _grids(options: ImageUnderstandingOptions) -> list[tuple[int, int]]:
    try:
        return allowed_grids(options.tiling.max_tiles, options.tiling.min_tiles)
    except ValueError as error:
        raise RecipeError(f"modalities.image_understanding.tiling: {error}") from error


def _processor(options: ImageUnderstandingOptions) -> ImageProcessor | TiledImageProcessor:
    if options.preprocess not in PREPROCESS_MODES:
        raise RecipeError(
            f"modalities.image_understanding.preprocess: expected one of {', '.join(PREPROCESS_MODES)}, got {options.preprocess!r}"
        )
    if options.preprocess != "modal-core" and not options.pad_to_square:
        raise RecipeError(f"modalities.image_understanding: preprocess {options.preprocess} always pads; pad_to_square must be true")
    processor = ImageProcessor(
        size=options.image_size, pad_square=options.pad_to_square, max_pixels=options.max_pixels, preprocess=options.preprocess
    )
    if not options.tiling.enabled:
        return processor
    return TiledImageProcessor(processor, tuple(_grids(options)), _per_tile(options))


def _layouts(options: ImageUnderstandingOptions) -> list[tuple[int | str, ...]]:
    """The item layout of every grid an image may get (one, untiled)."""
    grids = _grids(options) if options.tiling.enabled else [(1, 1)]
    return [tile_layout(grid, _per_tile(options)) for grid in grids]


def _num_positions(options: ImageUnderstandingOptions) -> int:
    """Most placeholder positions of one image (untiled: all of them)."""
    return max(sum(part for part in layout if isinstance(part, int)) for layout in _layouts(options))


def _positions_summary(options: ImageUnderstandingOptions) -> str:
    per_tile = _per_tile(options)
    if not options.tiling.enabled:
        return f"{per_tile} positions per image"
    lengths = sorted({_occupied(layout) for layout in _layouts(options)})
    return (
        f"{lengths[0]} to {lengths[-1]} positions per image: {per_tile} per tile, up to {options.tiling.max_tiles} tiles "
        f"+ a thumbnail, separators {TILE_SEPARATOR} {ROW_END} included ({lengths[-1] - per_tile} more than untiled)"
    )


def _occupied(layout: tuple[int | str, ...]) -> int:
    """Positions a layout occupies: its placeholders and its special tokens."""
    return sum(part if isinstance(part, int) else 1 for part in layout)


IMAGE_UNDERSTANDING = ModalitySpec(
    name=UNDERSTANDING,
    direction="input",
    options=ImageUnderstandingOptions,
    build_encoder=_encoder,
    build_adapter=_adapter,
    build_processor=_processor,
    num_positions=_num_positions,
    payload_shape=lambda options: (3, options.image_size, options.image_size),
    begin_token=BEGIN_OF_IMAGE,
    end_token=END_OF_IMAGE,
    placeholder_token=IMAGE_PLACEHOLDER,
    layout_tokens=lambda options: (TILE_SEPARATOR, ROW_END) if options.tiling.enabled else (),
    positions_summary=_positions_summary,
    cli_flag="image",
    keyword="image",
    weight_paths=("path", "encoder.path"),
    description="any transformers vision transformer (SigLIP, CLIP, DINOv2, ...) + MLP adapter, optional tiling; answered by the text head",
)


@hookimpl
def modal_core_modalities() -> list[ModalitySpec]:
    return [IMAGE_UNDERSTANDING]


@hookimpl
def modal_core_block_classes() -> list[type]:
    # The towers' transformer layers: FSDP units and activation-checkpointing boundaries.
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Layer
    from transformers.models.siglip.modeling_siglip import SiglipEncoderLayer

    return [SiglipEncoderLayer, CLIPEncoderLayer, Dinov2Layer]
