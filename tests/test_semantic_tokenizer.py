"""The semantic tokenizer: its semantic loss against a direct computation, what trains and
what is saved, and a plain tokenizer reading its checkpoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_image_plugins import TINY_IMAGES
from transformers import SiglipVisionConfig, SiglipVisionModel

from modal_core.checkpoints.store import save_model_state, write_atomically
from modal_core_image_understanding.encoder import VisionTowerEncoder
from modal_core_vq_generation.plugin import VQGenerationOptions, build_tokenizer
from modal_core_vq_generation.semantic import SemanticVQTokenizer

VQ = TINY_IMAGES["vq_generation"]
TOWER = {"image_size": 32, "patch_size": 16, "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def _tokenizer(kind: str, weight: float = 0.5) -> SemanticVQTokenizer:
    torch.manual_seed(0)
    teacher = VisionTowerEncoder(SiglipVisionModel(SiglipVisionConfig(**TOWER)))  # a 2x2 grid of 24-wide features
    sizes = {key: value for key, value in VQ.items() if key != "channel_multiplier"}
    return SemanticVQTokenizer(
        teacher=teacher,
        teacher_grid=2,
        teacher_width=24,
        semantic_weight=weight,
        semantic_loss=kind,
        channel_multiplier=tuple(VQ["channel_multiplier"]),
        **sizes,
    )


def _direct_semantic_loss(tokenizer: SemanticVQTokenizer, pixels: torch.Tensor, kind: str) -> torch.Tensor:
    """The semantic decoder's layers, by hand, on the codes' (normalised) codebook rows."""
    latents = F.normalize(tokenizer.vq.quant_conv(tokenizer.vq.encoder(pixels)), dim=1)  # (B, code_dim, 4, 4)
    codebook = F.normalize(tokenizer.vq.quantize.embedding.weight, dim=-1)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    codes = torch.cdist(flat, codebook).argmin(-1)
    grid = codebook[codes].reshape(pixels.shape[0], 4, 4, -1).permute(0, 3, 1, 2)
    first, second = tokenizer.semantic_decoder.layers[0], tokenizer.semantic_decoder.layers[2]
    features = F.conv2d(F.silu(F.conv2d(grid, first.weight, first.bias, padding=1)), second.weight, second.bias, padding=1)
    predicted = F.interpolate(features, size=(2, 2), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    target = tokenizer.teacher.vision(pixel_values=pixels).last_hidden_state
    if kind == "cosine":
        return (1 - (predicted * target).sum(-1) / (predicted.norm(dim=-1) * target.norm(dim=-1))).mean()
    return ((predicted - target) ** 2).mean()


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_semantic_loss_matches_direct_computation(kind):
    tokenizer = _tokenizer(kind)
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    losses = tokenizer.loss(pixels)
    torch.testing.assert_close(losses["semantic"], _direct_semantic_loss(tokenizer, pixels, kind))
    pixel_and_vq = losses["recon_l1"] + losses["recon_l2"] + losses["codebook"] + losses["commitment"]
    torch.testing.assert_close(losses["loss"], pixel_and_vq + 0.5 * losses["semantic"])


def test_semantic_loss_trains_encoder_and_decoder_not_teacher():
    tokenizer = _tokenizer("cosine", weight=1.0)
    tokenizer.loss(torch.rand(2, 3, 32, 32) * 2 - 1)["semantic"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tokenizer.semantic_decoder.parameters())
    assert tokenizer.vq.quant_conv.weight.grad.abs().sum() > 0  # through the straight-through codes
    assert all(p.grad is None for p in tokenizer.teacher.parameters())
    tokenizer.train()
    assert not tokenizer.teacher.training


def test_semantic_checkpoint_leaves_out_teacher_and_loads_into_plain_tokenizer(tmp_path):
    tokenizer = _tokenizer("cosine")
    state = tokenizer.state_dict()
    assert not any(key.startswith("teacher.") for key in state)
    assert any(key.startswith("semantic_decoder.") for key in state)
    write_atomically(tmp_path / "semantic", lambda folder: save_model_state(state, folder))
    plain = build_tokenizer(VQGenerationOptions(**VQ, tokenizer_path=str(tmp_path / "semantic")))
    assert set(plain.state_dict()) == {key for key in state if not key.startswith("semantic_decoder.")}
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(plain.encode(pixels), tokenizer.encode(pixels))
