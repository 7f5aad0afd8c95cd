"""Import the official deepseek-ai/Janus layout (`config.json` with `language_config`,
`vision_config`, `aligner_config`, `gen_*_config`; weights named `vision_model.`,
`aligner.`, `gen_vision_model.`, `gen_aligner.`, `gen_embed.`, `gen_head.`,
`language_model.`, in `.bin` or safetensors shards).

The official config names its towers (e.g. `siglip_large_patch16_384`, `VQ-16`) instead
of listing their sizes, so sizes are read from the weight shapes; the number of vision
attention heads, which no shape shows, comes from `vision_config.params.num_heads` or
the named tower.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig, PreTrainedTokenizerFast

from modal_core.data.text_tokenizer import declared_special_tokens
from modal_core.errors import CheckpointError
from modal_core.interop.weights_io import iter_tensors
from modal_core.plugins import PluginManager
from modal_core_images.janus.hf_janus import write_checkpoint
from modal_core_images.janus.keys import official_to_hf

VISION_HEADS = {"siglip_large_patch16_384": 16, "siglip_so400m_patch14_384": 16}
"""Attention heads of the vision towers the official configs name."""
LANGUAGE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
)
PAD_TOKEN = "<｜▁pad▁｜>"


def official_tensors(source: Path):
    """The official weights of `source`, renamed (and q/k/v split) to transformers'."""
    for key, tensor in iter_tensors(source):
        yield from official_to_hf(key, tensor)


def janus_config_from_official(source: Path, shapes: dict[str, tuple[int, ...]], tokenizer: PreTrainedTokenizerFast) -> JanusConfig:
    """A transformers `JanusConfig` for an official checkpoint, from its config.json and
    the shapes of its (transformers-named) weights."""
    config_path = source / "config.json"
    try:
        official = json.loads(config_path.read_text())
        language = official["language_config"]
        vision_params = official.get("vision_config", {}).get("params", {})
    except (OSError, json.JSONDecodeError, KeyError) as error:
        raise CheckpointError(f"{config_path}: not an official Janus config (expected language_config, vision_config): {error}") from error
    text = LlamaConfig(
        **{key: language[key] for key in LANGUAGE_KEYS if key in language},
        tie_word_embeddings="lm_head.weight" not in shapes,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )

    def shape(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise CheckpointError(f"{source}: the official weights lack {key!r} (in transformers' naming)")
        return shapes[key]

    vision_prefix = "model.vision_model."
    width = shape(vision_prefix + "embeddings.position_embedding.weight")
    num_patches, hidden = width
    patch = shape(vision_prefix + "embeddings.patch_embedding.weight")[-1]
    layers = _count(shapes, rf"{re.escape(vision_prefix)}encoder\.layers\.(\d+)\.")
    mlp = shape(vision_prefix + "encoder.layers.0.mlp.fc1.weight")[0]
    heads = vision_params.get("num_heads", VISION_HEADS.get(vision_params.get("model_name", ""), None))
    if heads is None:
        raise CheckpointError(
            f"{config_path}: unknown vision tower {vision_params.get('model_name')!r}; add vision_config.params.num_heads"
        )
    grid = math.isqrt(num_patches)
    vision = JanusVisionConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=int(heads),
        image_size=grid * patch,
        patch_size=patch,
        mlp_ratio=mlp / hidden,
        use_qk_norm=vision_prefix + "encoder.layers.0.self_attn.q_norm.weight" in shapes,
        projection_dim=shape("model.aligner.fc1.weight")[0],
        depth=1 + _count(shapes, r"model\.aligner\.hidden_layers\.(\d+)\."),
        num_image_tokens=num_patches,
    )
    vq_prefix = "model.vqmodel."
    base = shape(vq_prefix + "encoder.conv_in.weight")[0]
    levels = _count(shapes, rf"{re.escape(vq_prefix)}encoder\.down\.(\d+)\.")
    multipliers = [shape(f"{vq_prefix}encoder.down.{i}.block.0.conv2.weight")[0] // base for i in range(levels)]
    codebook, code_dim = shape(vq_prefix + "quantize.embedding.weight")
    vq = JanusVQVAEConfig(
        embed_dim=code_dim,
        num_embeddings=codebook,
        base_channels=base,
        channel_multiplier=multipliers,
        num_res_blocks=_count(shapes, rf"{re.escape(vq_prefix)}encoder\.down\.0\.block\.(\d+)\."),
        latent_channels=shape(vq_prefix + "quant_conv.weight")[1],
        projection_dim=shape("model.generation_aligner.fc1.weight")[0],
        image_token_embed_dim=shape("model.generation_head.proj_out.weight")[1],
        num_hidden_layers=1 + _count(shapes, r"model\.generation_aligner\.hidden_layers\.(\d+)\."),
    )
    image_token = tokenizer.convert_tokens_to_ids("<image_placeholder>")
    return JanusConfig(
        text_config=text, vision_config=vision, vq_config=vq, image_token_id=image_token, tie_word_embeddings=text.tie_word_embeddings
    )


def _count(shapes: dict[str, tuple[int, ...]], pattern: str) -> int:
    indices = {int(m.group(1)) for key in shapes if (m := re.match(pattern, key))}
    return max(indices) + 1 if indices else 0


def from_official_janus(source: str | Path, out: str | Path, dtype: str | None = None, plugins: PluginManager | None = None) -> Path:
    """Convert an official deepseek-ai/Janus folder into a modal-core checkpoint.

    Reads the weights twice, shard by shard: once for their shapes (the architecture),
    once to convert them; their values are held once."""
    source = Path(source)
    if not (source / "tokenizer.json").is_file():
        raise CheckpointError(f"{source} has no tokenizer.json; the official Janus folders ship one next to the weights")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(source / "tokenizer.json"), **declared_special_tokens(source))
    shapes = {key: tuple(tensor.shape) for key, tensor in official_tensors(source)}
    config = janus_config_from_official(source, shapes, tokenizer)
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN) if PAD_TOKEN in tokenizer.get_vocab() else tokenizer.pad_token_id
    return write_checkpoint(
        config,
        official_tensors(source),
        tokenizer_source=source,
        out=Path(out),
        dtype=dtype,
        system_prompt=True,
        pad_token_id=pad,
        source=str(source),
        plugins=plugins,
    )
