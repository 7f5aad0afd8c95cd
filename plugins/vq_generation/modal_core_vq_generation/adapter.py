"""Generation adapter and image head, built from transformers' Janus modules so their
weights map one-to-one onto `JanusForConditionalGeneration`'s."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.janus.configuration_janus import JanusVQVAEConfig
from transformers.models.janus.modeling_janus import (
    JanusVQVAEAlignerMLP,
    JanusVQVAEHead,
)


def _config(codebook_size: int, code_dim: int, hidden_size: int, depth: int) -> JanusVQVAEConfig:
    return JanusVQVAEConfig(
        num_embeddings=codebook_size,
        embed_dim=code_dim,
        projection_dim=hidden_size,
        image_token_embed_dim=hidden_size,
        num_hidden_layers=depth,
        hidden_act="gelu",
    )


class CodeEmbeddingAdapter(nn.Module):
    """Codes (n, N) -> code embeddings (n, N, code_dim) -> MLP -> (n, N, hidden)."""

    def __init__(self, codebook_size: int, code_dim: int, hidden_size: int, depth: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, code_dim)
        self.aligner = JanusVQVAEAlignerMLP(_config(codebook_size, code_dim, hidden_size, depth))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.aligner(self.embedding(codes))


def build_image_head(codebook_size: int, code_dim: int, hidden_size: int) -> nn.Module:
    """Hidden state -> Linear -> GELU -> Linear -> codebook logits (Janus's gen head)."""
    return JanusVQVAEHead(_config(codebook_size, code_dim, hidden_size, depth=2))


def build_vector_adapter(code_dim: int, hidden_size: int, depth: int = 2) -> nn.Module:
    """Code vectors (n, N, code_dim) -> MLP -> (n, N, hidden): the generation adapter's
    MLP without its embedding table (the shared-encoder understanding path)."""
    return JanusVQVAEAlignerMLP(_config(1, code_dim, hidden_size, depth))
