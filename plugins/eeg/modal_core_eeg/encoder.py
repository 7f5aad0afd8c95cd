"""The channel-aware EEG patch encoder, its adapter, and an optional classification head.

Reading order: every channel's window is cut into temporal patches, each embedded by a
small 1-D convolution; a channel embedding computed from the channel's scalp position
and a time embedding are added; an MLP (and optionally transformer layers) mixes
them; finally,
for each time patch, `queries_per_patch` learned queries attend over the channels and
become the sequence positions the language model reads.

Because channels are identified by position, never by slot index, the encoder takes
any channel set of any order and size (up to `max_channels`); padded slots are masked
out everywhere, so they change nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from modal_core_eeg.options import EEGOptions
from modal_core_eeg.processor import split_payload

POSITION_FREQUENCIES = 6
CONV_CHANNELS = 16


class ChannelPositionEmbedding(nn.Module):
    """Scalp position (x, y, z) in head radii -> channel embedding (width), through
    Fourier features so that nearby electrodes get similar but distinct embeddings."""

    def __init__(self, width: int, frequencies: int = POSITION_FREQUENCIES) -> None:
        super().__init__()
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(3 + 6 * frequencies, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.unsqueeze(-1) * self.frequencies  # (..., 3, F)
        features = torch.cat([positions, angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)
        return self.mlp(features)  # (..., width)


class PatchEmbedding(nn.Module):
    """One channel's temporal patch (patch_samples,) -> embedding (width), by two
    convolutions (the second strided) and a linear map of the flattened feature maps."""

    def __init__(self, patch_samples: int, width: int) -> None:
        super().__init__()
        stride = 4 if patch_samples % 4 == 0 else 1  # the second convolution summarises 4-sample steps
        self.conv = nn.Sequential(
            nn.Conv1d(1, CONV_CHANNELS, kernel_size=9, padding=4),
            nn.GELU(),
            nn.Conv1d(CONV_CHANNELS, CONV_CHANNELS, kernel_size=stride, stride=stride),
            nn.GELU(),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, 1, patch_samples)).numel()
        self.project = nn.Linear(flat, width)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        features = self.conv(patches.unsqueeze(1))  # (M, CONV_CHANNELS, L')
        return self.project(features.flatten(1))  # (M, width)


class EEGPatchEncoder(nn.Module):
    """Payloads (n, max_channels, 4 + T) -> features (n, num_patches * queries_per_patch, width)."""

    def __init__(
        self,
        patch_samples: int,
        num_patches: int,
        width: int = 64,
        layers: int = 1,
        heads: int = 4,
        queries_per_patch: int = 2,
    ) -> None:
        super().__init__()
        self.patch_samples, self.num_patches, self.width = patch_samples, num_patches, width
        self.patch_embedding = PatchEmbedding(patch_samples, width)
        self.channel_embedding = ChannelPositionEmbedding(width)
        self.time_embedding = nn.Parameter(torch.randn(num_patches, width) * 0.02)
        # Patch content and channel position meet non-linearly before pooling.
        self.token_mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers > 0 else None
        self.queries = nn.Parameter(torch.randn(queries_per_patch, width) * 0.02)
        self.pool = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)

    @classmethod
    def from_options(cls, options: EEGOptions) -> EEGPatchEncoder:
        """The encoder a recipe's `modalities.eeg` block describes."""
        return cls(
            options.patch_samples, options.num_patches, options.width, options.encoder_layers, options.num_heads, options.queries_per_patch
        )

    @property
    def num_positions(self) -> int:
        """Sequence positions (features) per item."""
        return self.num_patches * self.queries.shape[0]

    def encode(self, payload: torch.Tensor) -> torch.Tensor:
        """Features (n, num_patches * queries_per_patch, width) of a payload batch."""
        mask, positions, signal = split_payload(payload)  # (n, C), (n, C, 3), (n, C, T)
        n, channels, _ = signal.shape
        patches = signal.reshape(n, channels, self.num_patches, self.patch_samples)
        tokens = signal.new_zeros(n, channels, self.num_patches, self.width)
        tokens[mask] = self.patch_embedding(patches[mask].flatten(0, 1)).view(-1, self.num_patches, self.width)  # real channels only
        tokens = tokens + self.channel_embedding(positions).unsqueeze(2) + self.time_embedding  # (n, C, P, D)
        mixed = tokens + self.token_mlp(tokens)
        if self.mixer is not None:  # attention across all channels and patches
            token_mask = mask.unsqueeze(2).expand(n, channels, self.num_patches).reshape(n, -1)  # (n, C * P)
            mixed = self.mixer(mixed.reshape(n, -1, self.width), src_key_padding_mask=~token_mask)
        # Pool each time patch over its channels: (n * P, C, D) keys, (n * P, Q, D) queries.
        per_patch = mixed.view(n, channels, self.num_patches, self.width).transpose(1, 2).reshape(-1, channels, self.width)
        queries = (self.queries.unsqueeze(0) + self.time_embedding.unsqueeze(1)).repeat(n, 1, 1)  # (n * P, Q, D)
        channel_padding = (~mask).repeat_interleave(self.num_patches, dim=0)  # (n * P, C)
        pooled, _ = self.pool(queries, per_patch, per_patch, key_padding_mask=channel_padding, need_weights=False)
        return self.norm(pooled.reshape(n, -1, self.width))  # (n, P * Q, D)

    def forward(self, payload: torch.Tensor) -> torch.Tensor:
        return self.encode(payload)


class EEGAdapter(nn.Module):
    """Encoder features (n, N, width) -> backbone inputs (n, N, hidden): Linear, then
    (GELU, Linear) x (depth - 1), the shape of Janus's understanding aligner."""

    def __init__(self, width: int, hidden_size: int, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(width, hidden_size)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


class EEGClassifier(nn.Module):
    """A small decoding model for tasks that need no language model: the patch encoder,
    mean over its positions, and a linear layer to `num_classes` logits."""

    def __init__(self, encoder: EEGPatchEncoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.width, num_classes)

    def forward(self, payload: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.encode(payload).mean(dim=1))  # (n, num_classes)
