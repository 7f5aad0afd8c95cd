"""The official deepseek-ai/Janus layout imports to the same model as transformers'.

The official folder is written from the tiny transformers model by renaming its weights
the way transformers' `convert_janus_weights_to_hf.py` describes the official layout
(merged vision q/k/v, `(1, N, D)` position embeddings, `conv_blocks`/`res`/`mid.<i>`
in the VQ model, `layers.<2k>` aligners, an attention-pooling head transformers drops).
"""

from __future__ import annotations

import json
import re
import shutil

import torch
from safetensors.torch import load_file

from modal_core_images.janus import from_official_janus
from modal_core_images.janus.official_janus import LANGUAGE_KEYS


def _official_name(key: str) -> str:
    rules = (
        (r"^model\.language_model\.", "language_model.model."),
        (r"^lm_head\.", "language_model.lm_head."),
        (r"^model\.vision_model\.embeddings\.patch_embedding\.", "vision_model.vision_tower.patch_embed.proj."),
        (r"^model\.vision_model\.post_layernorm\.", "vision_model.vision_tower.norm."),
        (r"^model\.vision_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"vision_model.vision_tower.blocks.\1.norm\2."),
        (r"^model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection_layer\.", r"vision_model.vision_tower.blocks.\1.attn.proj."),
        (r"^model\.vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"vision_model.vision_tower.blocks.\1.mlp."),
        (r"^model\.aligner\.fc1\.", "aligner.layers.0."),
        (r"^model\.aligner\.hidden_layers\.0\.", "aligner.layers.2."),
        (r"^model\.generation_aligner\.fc1\.", "gen_aligner.layers.0."),
        (r"^model\.generation_aligner\.hidden_layers\.0\.", "gen_aligner.layers.2."),
        (r"^model\.generation_embeddings\.", "gen_embed."),
        (r"^model\.generation_head\.proj_out\.", "gen_head.output_mlp_projector."),
        (r"^model\.generation_head\.", "gen_head."),
        (r"^model\.vqmodel\.", "gen_vision_model."),
        (r"\.encoder\.down\.", ".encoder.conv_blocks."),
        (r"\.decoder\.up\.", ".decoder.conv_blocks."),
        (r"\.block\.(\d+)\.", r".res.\1."),
        (r"\.mid\.block_1\.", ".mid.0."),
        (r"\.mid\.attn_1\.", ".mid.1."),
        (r"\.mid\.block_2\.", ".mid.2."),
    )
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def _official_state(reference) -> dict[str, torch.Tensor]:
    state, merged = {}, {}
    for key, tensor in reference.state_dict().items():
        match = re.match(r"model\.vision_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", key)
        if match:
            merged.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = tensor
        elif key == "model.vision_model.embeddings.position_embedding.weight":
            state["vision_model.vision_tower.pos_embed"] = tensor[None].clone()
        else:
            state[_official_name(key)] = tensor.clone()
    for (layer, kind), parts in merged.items():
        state[f"vision_model.vision_tower.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    state["vision_model.vision_tower.attn_pool.latent"] = torch.zeros(1, 1, 32)  # dropped, as transformers does
    state["gen_vision_model.quantize.codebook_used"] = torch.zeros(64)
    return state


def test_official_layout_converts_to_the_same_checkpoint(converted, janus_plugins, tmp_path):
    reference, hf_dir, checkpoint = converted
    official = tmp_path / "official"
    official.mkdir()
    state = _official_state(reference)
    names = sorted(state)
    half = len(names) // 2  # two .bin shards with an index, like Janus-Pro-7B
    shards = {"pytorch_model-00001-of-00002.bin": names[:half], "pytorch_model-00002-of-00002.bin": names[half:]}
    for shard, keys in shards.items():
        torch.save({key: state[key] for key in keys}, official / shard)
    weight_map = {key: shard for shard, keys in shards.items() for key in keys}
    (official / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    text = reference.config.text_config
    language = {k: v for k, v in text.to_dict().items() if k in LANGUAGE_KEYS}  # what the converter reads
    config = {
        "language_config": {**language, "model_type": "llama"},
        "vision_config": {"cls": "CLIPVisionTower", "params": {"model_name": "tiny_siglip", "num_heads": 4, "image_size": 32}},
        "aligner_config": {"cls": "MlpProjector", "params": {"depth": 2, "n_embed": 64}},
        "gen_vision_config": {"cls": "VQ-16", "params": {"image_token_size": 64, "n_embed": 8}},
        "gen_aligner_config": {"cls": "MlpProjector", "params": {"depth": 2, "n_embed": 64}},
        "gen_head_config": {"cls": "vision_head", "params": {"image_token_embed": 64, "image_token_size": 64, "n_embed": 64}},
    }
    (official / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(hf_dir / name, official / name)

    out = from_official_janus(official, tmp_path / "modal", plugins=janus_plugins)
    ours, expected = load_file(str(out / "model.safetensors")), load_file(str(checkpoint / "model.safetensors"))
    assert sorted(ours) == sorted(expected)
    assert all(torch.equal(ours[key], expected[key]) for key in expected)
    assert (out / "recipe.yaml").read_text() != "" and (out / "backbone" / "config.json").is_file()
