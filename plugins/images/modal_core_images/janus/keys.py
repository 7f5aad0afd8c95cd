"""Weight names: modal-core <-> transformers' `JanusForConditionalGeneration`, and the
official deepseek-ai/Janus layout -> transformers'.

Every tensor maps one to one between modal-core and transformers (a renamed prefix);
the official layout merges the vision tower's q/k/v and names blocks differently, as
described by transformers' `convert_janus_weights_to_hf.py`.
"""

from __future__ import annotations

import re

import torch

from modal_core.errors import CheckpointError
from modal_core_images.modalities import GENERATION, UNDERSTANDING

# (modal-core prefix, transformers prefix); the first match wins, in both directions.
PREFIXES = (
    ("backbone.model.", "model.language_model."),
    ("backbone.lm_head.", "lm_head."),
    (f"encoders.{UNDERSTANDING}.vision.", "model.vision_model."),
    (f"adapters.{UNDERSTANDING}.", "model.aligner."),
    (f"encoders.{GENERATION}.vq.", "model.vqmodel."),
    (f"adapters.{GENERATION}.embedding.", "model.generation_embeddings."),
    (f"adapters.{GENERATION}.aligner.", "model.generation_aligner."),
    (f"heads.{GENERATION}.", "model.generation_head."),
)


def hf_to_modal(key: str) -> str:
    """The modal-core name of a transformers Janus weight."""
    for ours, theirs in PREFIXES:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    raise CheckpointError(f"weight {key!r} is not part of a transformers JanusForConditionalGeneration")


def modal_to_hf(key: str) -> str:
    """The transformers Janus name of a modal-core weight."""
    for ours, theirs in PREFIXES:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    raise CheckpointError(f"weight {key!r} has no place in a transformers JanusForConditionalGeneration")


# -- the official layout ---------------------------------------------------------------
_VISION_TOWER = "vision_model.vision_tower."
_VISION_RENAMES = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn": "self_attn", "proj": "projection_layer"}
_VQ_RENAMES = {"res": "block"}
_VQ_MID = {"0": "block_1", "1": "attn_1", "2": "block_2"}
_DROPPED = (re.compile(r"^vision_model\.vision_tower\.attn_pool\."), re.compile(r"^gen_vision_model\.quantize\.codebook_used$"))


def official_to_hf(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The transformers weights made from one official weight: usually one, three for a
    merged q/k/v projection, none for parts transformers does not keep."""
    if any(pattern.search(key) for pattern in _DROPPED):
        return []
    if key.startswith("language_model."):
        rest = key[len("language_model.") :]
        if rest.startswith("model."):
            return [("model.language_model." + rest[len("model.") :], tensor)]
        if rest == "lm_head.weight":
            return [("lm_head.weight", tensor)]
    if key.startswith(_VISION_TOWER):
        return _vision_tower(key[len(_VISION_TOWER) :], tensor)
    if key.startswith("gen_vision_model."):
        return [("model.vqmodel." + _vq_name(key[len("gen_vision_model.") :]), tensor)]
    for official, ours in (("gen_aligner.", "model.generation_aligner."), ("aligner.", "model.aligner.")):
        if key.startswith(official):
            return [(ours + _aligner_name(key, key[len(official) :]), tensor)]
    if key.startswith("gen_embed."):
        return [("model.generation_embeddings." + key[len("gen_embed.") :], tensor)]
    if key.startswith("gen_head."):
        rest = key[len("gen_head.") :].replace("output_mlp_projector.", "proj_out.", 1)
        return [("model.generation_head." + rest, tensor)]
    raise CheckpointError(f"official Janus weight {key!r} has no known place in the model")


def _vision_tower(rest: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    prefix = "model.vision_model."
    if rest == "pos_embed":  # (1, N, D) in the official tower
        return [(prefix + "embeddings.position_embedding.weight", tensor.reshape(tensor.shape[-2:]))]
    if rest.startswith("patch_embed.proj."):
        return [(prefix + "embeddings.patch_embedding." + rest.split(".")[-1], tensor)]
    if rest.startswith("norm."):
        return [(prefix + "post_layernorm." + rest.split(".")[-1], tensor)]
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)
    if match is None:
        raise CheckpointError(f"official Janus weight 'vision_model.vision_tower.{rest}' has no known place in the model")
    layer, inner = match.groups()
    parts = [_VISION_RENAMES.get(part, part) for part in inner.split(".")]
    name = f"{prefix}encoder.layers.{layer}." + ".".join(parts)
    if parts[:2] == ["self_attn", "qkv"]:  # merged (3D, ...) -> q, k, v
        q, k, v = tensor.chunk(3, dim=0)
        return [(name.replace(".qkv.", f".{p}_proj."), t) for p, t in zip("qkv", (q, k, v))]
    return [(name, tensor)]


def _vq_name(rest: str) -> str:
    parts = rest.split(".")
    for index, part in enumerate(parts):
        if part == "conv_blocks":
            parts[index] = "down" if parts[index - 1] == "encoder" else "up"
        elif part == "mid" and index + 1 < len(parts):
            parts[index + 1] = _VQ_MID.get(parts[index + 1], parts[index + 1])
        else:
            parts[index] = _VQ_RENAMES.get(part, part)
    return ".".join(parts)


def _aligner_name(key: str, rest: str) -> str:
    # The official aligner is nn.Sequential(Linear, GELU, Linear, ...): Linear k sits at 2k.
    match = re.fullmatch(r"layers\.(\d+)\.(weight|bias)", rest)
    if match is None or int(match.group(1)) % 2:
        raise CheckpointError(f"official Janus weight {key!r}: expected layers.<even index>.weight/bias")
    position = int(match.group(1)) // 2
    return f"fc1.{match.group(2)}" if position == 0 else f"hidden_layers.{position - 1}.{match.group(2)}"
