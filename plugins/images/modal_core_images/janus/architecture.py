"""Architecture descriptions: a transformers `JanusConfig` <-> a modal-core recipe.

The recipe written next to a converted checkpoint names the same sizes as the
`JanusConfig` (understanding tower `architecture: janus`, VQ `architecture: janus`) and
carries the Janus-Pro stage-3 settings, so it both rebuilds the model and fine-tunes it.
"""

from __future__ import annotations

from typing import Any

from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, PretrainedConfig

from modal_core.data.chat import JANUS_SYSTEM_PROMPT
from modal_core.errors import CheckpointError
from modal_core_images.modalities import GENERATION, UNDERSTANDING

# Config entries that describe the file, not the architecture.
_BOOKKEEPING = ("architectures", "transformers_version", "_name_or_path", "model_type", "dtype", "torch_dtype", "output_attentions")


def _require(condition: bool, source: str, message: str) -> None:
    if not condition:
        raise CheckpointError(f"{source}: {message}; modal-core cannot represent this Janus variant")


def backbone_config_kwargs(text_config: PretrainedConfig) -> dict[str, Any]:
    """Keyword arguments that rebuild the text config with `AutoConfig.for_model`."""
    kwargs = text_config.to_diff_dict()
    for key in _BOOKKEEPING:
        kwargs.pop(key, None)
    return kwargs


def recipe_from_janus_config(config: JanusConfig, source: str, tied: bool, system_prompt: bool = True) -> dict[str, Any]:
    """A modal-core recipe (plain dict) describing the model of `config`.

    `tied`: whether the LM head shares the token embeddings; `system_prompt`: whether
    understanding chats open with Janus's system prompt (transformers'
    `use_default_system_prompt`)."""
    text, vision, vq = config.text_config, config.vision_config, config.vq_config
    hidden = text.hidden_size
    _require(vision.projection_dim == hidden, source, f"vision_config.projection_dim {vision.projection_dim} != text hidden_size {hidden}")
    _require(vq.projection_dim == hidden, source, f"vq_config.projection_dim {vq.projection_dim} != text hidden_size {hidden}")
    _require(
        vq.image_token_embed_dim == hidden, source, f"vq_config.image_token_embed_dim {vq.image_token_embed_dim} != hidden_size {hidden}"
    )
    _require(vision.hidden_act == "gelu" and vq.hidden_act == "gelu", source, "vision/vq hidden_act must be 'gelu'")
    _require(
        vision.attention_bias and vision.layer_norm_eps == 1e-6, source, "the vision tower needs attention_bias=true, layer_norm_eps=1e-6"
    )
    _require(not vq.double_latent and vq.in_channels == vq.out_channels == 3, source, "the VQ model must map RGB to one latent")
    intermediate = vision.hidden_size * vision.mlp_ratio
    _require(float(intermediate).is_integer(), source, f"vision mlp_ratio {vision.mlp_ratio} gives a fractional MLP width")
    grid = vision.image_size // vision.patch_size
    _require(
        vision.num_image_tokens == grid * grid, source, f"vision_config.num_image_tokens {vision.num_image_tokens} != {grid}x{grid} patches"
    )
    downsample = 2 ** (len(vq.channel_multiplier) - 1)
    tied_text = {**backbone_config_kwargs(text), "tie_word_embeddings": tied}
    return {
        "description": f"Janus converted from {source}; fine-tune with the Janus-Pro stage-3 settings below",
        "output_dir": "runs/janus-finetune",
        "tokenizer": {"path": None},
        "backbone": {"path": None, "model_type": text.model_type, "config": tied_text},
        "modalities": {
            UNDERSTANDING: {
                "architecture": "janus",
                "image_size": vision.image_size,
                "patch_size": vision.patch_size,
                "width": vision.hidden_size,
                "num_layers": vision.num_hidden_layers,
                "num_heads": vision.num_attention_heads,
                "intermediate_size": int(intermediate),
                "use_qk_norm": vision.use_qk_norm,
                "adapter_depth": vision.depth,
                "pad_to_square": True,
                "preprocess": "official",  # bit-exact to Janus's VLMImageProcessor: the published numbers' inputs
            },
            GENERATION: {
                "architecture": "janus",
                "tokenizer_path": None,
                "image_size": grid * downsample,
                "codebook_size": vq.num_embeddings,
                "code_dim": vq.embed_dim,
                "base_channels": vq.base_channels,
                "channel_multiplier": list(vq.channel_multiplier),
                "num_res_blocks": vq.num_res_blocks,
                "latent_channels": vq.latent_channels,
                "adapter_depth": vq.num_hidden_layers,
            },
        },
        "chat": {"system_prompt": JANUS_SYSTEM_PROMPT if system_prompt else "", "media_separator": "\n"},
        # Janus-Pro stage 3 (tech report): encoders frozen, AdamW (0.9, 0.95), no weight
        # decay, constant 4e-5, gradient clip 1.0.
        "train": ["backbone", "adapters", "heads"],
        "data": {"max_length": min(int(text.max_position_embeddings), 4096), "batch_size": 1},
        "optim": {"lr": 4.0e-5, "betas": [0.9, 0.95], "weight_decay": 0.0, "warmup_steps": 0, "schedule": "constant"},
        "trainer": {"gradient_clip_val": 1.0},
    }


def janus_config_from_recipe(recipe: Any, text_config: PretrainedConfig, image_token_id: int, source: str) -> JanusConfig:
    """The transformers `JanusConfig` of a modal-core model (recipe + backbone config)."""
    modalities = recipe.modalities
    _require(
        UNDERSTANDING in modalities and GENERATION in modalities, source, f"a Janus model needs modalities {UNDERSTANDING} and {GENERATION}"
    )
    und, gen = modalities[UNDERSTANDING], modalities[GENERATION]
    if und.get("architecture") != "janus":
        raise CheckpointError(
            f"{source}: cannot export to Hugging Face Janus: the understanding encoder "
            f"(modalities.{UNDERSTANDING}.architecture: {und.get('architecture')!r}) has another attention layout than "
            "Janus's vision tower; train with `architecture: janus` (as recipes/janus/*.yaml do) to export"
        )
    if gen.get("architecture", "janus") != "janus":
        raise CheckpointError(
            f"{source}: cannot export to Hugging Face Janus: the VQ tokenizer (modalities.{GENERATION}.architecture: "
            f"{gen.get('architecture')!r}, the quickstart's small conv VQ) is not transformers' JanusVQVAE, the only one a "
            "Janus checkpoint holds; train one with `architecture: janus` (recipes/janus/vq16.yaml) to export, or keep "
            "this model as a modal-core checkpoint"
        )
    _require(und.intermediate_size % und.width == 0, source, "image_understanding.intermediate_size must be a multiple of width")
    hidden = text_config.hidden_size
    grid = und.image_size // und.patch_size
    downsample = 2 ** (len(gen.channel_multiplier) - 1)
    _require(
        gen.image_size // downsample == grid,
        source,
        f"the VQ grid ({gen.image_size}/{downsample}) must equal the understanding grid ({grid})",
    )
    vision = JanusVisionConfig(
        hidden_size=und.width,
        num_hidden_layers=und.num_layers,
        num_attention_heads=und.num_heads,
        image_size=und.image_size,
        patch_size=und.patch_size,
        mlp_ratio=und.intermediate_size // und.width,
        use_qk_norm=bool(und.get("use_qk_norm", False)),
        projection_dim=hidden,
        depth=und.adapter_depth,
        num_image_tokens=grid * grid,
    )
    vq = JanusVQVAEConfig(
        embed_dim=gen.code_dim,
        num_embeddings=gen.codebook_size,
        base_channels=gen.base_channels,
        channel_multiplier=list(gen.channel_multiplier),
        num_res_blocks=gen.num_res_blocks,
        latent_channels=gen.latent_channels,
        projection_dim=hidden,
        image_token_embed_dim=hidden,
        num_hidden_layers=gen.adapter_depth,
    )
    tied = bool(getattr(text_config, "tie_word_embeddings", False))
    return JanusConfig(text_config=text_config, vision_config=vision, vq_config=vq, image_token_id=image_token_id, tie_word_embeddings=tied)
