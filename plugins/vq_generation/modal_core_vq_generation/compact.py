"""A compact VQGAN-style encoder/decoder for small images (the quickstart's 32 px).

The Janus VQ model (transformers' `JanusVQVAE`) needs 32-group normalisation, hence at
least 32 channels a level, and with that few channels each group is a single channel,
which normalises colour away; from its 0.02-std initialisation it learns flat-colour
shapes only slowly. This plain conv stack (no normalisation, PyTorch's default
initialisation) reaches a usable 32 px tokenizer in a few hundred steps on a CPU. It has
the same parts as `JanusVQVAE` (`encoder`, `quant_conv`, `quantize.embedding`,
`post_quant_conv`, `decoder`), so `VQImageTokenizer` drives both alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class CompactVQConfig:
    """The sizes `VQImageTokenizer` reads from its VQ model's config."""

    num_embeddings: int
    embed_dim: int
    channel_multiplier: tuple[int, ...]
    base_channels: int
    latent_channels: int


class _Codebook(nn.Module):
    def __init__(self, codebook_size: int, code_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, code_dim)


class CompactVQModel(nn.Module):
    """Strided convolutions down, transposed convolutions up, SiLU between; one
    2x resampling per level after the first, as with Janus's `channel_multiplier`."""

    def __init__(self, config: CompactVQConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_channels * m for m in config.channel_multiplier]
        down: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1), nn.SiLU()]
        for before, after in zip(widths, widths[1:]):
            down += [nn.Conv2d(before, after, 4, stride=2, padding=1), nn.SiLU()]
        down.append(nn.Conv2d(widths[-1], config.latent_channels, 3, padding=1))
        self.encoder = nn.Sequential(*down)
        self.quant_conv = nn.Conv2d(config.latent_channels, config.embed_dim, 1)
        self.quantize = _Codebook(config.num_embeddings, config.embed_dim)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.latent_channels, 1)
        up: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1), nn.SiLU()]
        for before, after in zip(widths[::-1], widths[::-1][1:]):
            up += [nn.ConvTranspose2d(before, after, 4, stride=2, padding=1), nn.SiLU()]
        up.append(nn.Conv2d(widths[0], 3, 3, padding=1))
        self.decoder = nn.Sequential(*up)
