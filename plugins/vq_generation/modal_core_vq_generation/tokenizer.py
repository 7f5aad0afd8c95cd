"""VQGAN-style image tokenizer built from transformers' Janus VQ-VAE blocks.

The network is a `transformers` `JanusVQVAE`, so `tokenizer.vq.state_dict()` loads
into (and from) Janus checkpoints unchanged. Quantisation is done here rather than by
`JanusVQVAEVectorQuantizer.forward`, which skips the l2 normalisation Janus was trained
with; `JanusVQVAE.decode` does normalise codebook rows, so codes produced here decode
the same way through either path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import JanusVQVAEConfig
from transformers.models.janus.modeling_janus import JanusVQVAE

from modal_core.evaluation.metrics import codebook_usage, psnr
from modal_core_vq_generation.compact import CompactVQConfig, CompactVQModel

# JanusVQVAE's GroupNorm layers always use 32 groups.
ARCHITECTURES = ("janus", "compact")
_GROUP_NORM_GROUPS = 32


@dataclass
class VQOutput:
    """Result of one tokenizer forward pass.

    Attributes:
        reconstruction: decoded pixels (B, 3, H, W), gradients flow to the encoder
            through the straight-through estimator.
        codes: code indices (B, N), row-major over the latent grid.
        codebook_loss: mean ||sg(z) - e||^2, moves codebook rows towards the encoder output.
        commitment_loss: beta * mean ||z - sg(e)||^2, keeps the encoder near its codes.
        straight_through: the code vectors (B, N, code_dim) the decoder read, with the
            encoder's gradient (what a further decoder, e.g. a semantic one, reads too).
    """

    reconstruction: torch.Tensor
    codes: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    straight_through: torch.Tensor


class VQImageTokenizer(nn.Module):
    """Turns square images into a grid of discrete codes and back.

    Defaults reproduce the Janus VQ tokenizer (384px images, 16x downsampling to a
    24x24 grid, 16384 codes of dimension 8); `architecture="compact"` swaps the Janus
    encoder/decoder for the small conv stack of `compact.py` (same quantiser). For
    "janus", every channel count (`base_channels * m` for each multiplier `m`) must be
    a multiple of 32, because the
    Janus blocks use 32-group GroupNorm.
    """

    def __init__(
        self,
        *,
        image_size: int = 384,
        codebook_size: int = 16384,
        code_dim: int = 8,
        base_channels: int = 128,
        channel_multiplier: tuple[int, ...] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 2,
        latent_channels: int = 256,
        dropout: float = 0.0,
        l2_normalize: bool = True,
        commitment_beta: float = 0.25,
        architecture: str = "janus",
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if not channel_multiplier:
            raise ValueError("channel_multiplier needs at least one level")
        downsample = 2 ** (len(channel_multiplier) - 1)
        if image_size <= 0 or image_size % downsample:
            raise ValueError(
                f"image_size {image_size} must be a positive multiple of the downsampling "
                f"factor {downsample} implied by channel_multiplier {tuple(channel_multiplier)}"
            )
        channels = [base_channels * m for m in channel_multiplier]
        groups = _GROUP_NORM_GROUPS if architecture == "janus" else 1
        if any(c <= 0 or c % groups for c in channels):
            raise ValueError(
                f"base_channels * channel_multiplier gives channel counts {channels}; each must be a "
                f"positive multiple of {_GROUP_NORM_GROUPS} (Janus uses 32-group GroupNorm)"
            )
        if codebook_size <= 0 or code_dim <= 0:
            raise ValueError(f"codebook_size and code_dim must be positive, got {codebook_size}, {code_dim}")
        if commitment_beta < 0:
            raise ValueError(f"commitment_beta must be non-negative, got {commitment_beta}")

        self.image_size = image_size
        self.l2_normalize = l2_normalize
        self.commitment_beta = commitment_beta
        config = JanusVQVAEConfig(
            embed_dim=code_dim,
            num_embeddings=codebook_size,
            latent_channels=latent_channels,
            base_channels=base_channels,
            channel_multiplier=tuple(channel_multiplier),
            num_res_blocks=num_res_blocks,
            dropout=dropout,
            # JanusVQVAE.decode reshapes the token sequence to num_patches x num_patches.
            num_patches=image_size // downsample,
        )
        if architecture == "compact":
            self.vq = CompactVQModel(CompactVQConfig(codebook_size, code_dim, tuple(channel_multiplier), base_channels, latent_channels))
        else:
            self.vq = JanusVQVAE(config)
        # JanusVQVAE switches itself to eval mode because Janus keeps it frozen; this
        # module is trainable, so start in training mode like any other nn.Module.
        self.train()

    @property
    def downsample_factor(self) -> int:
        """Image pixels per latent cell along each side."""
        return 2 ** (len(self.vq.config.channel_multiplier) - 1)

    @property
    def grid_size(self) -> int:
        """Side length of the latent code grid."""
        return self.image_size // self.downsample_factor

    @property
    def num_tokens(self) -> int:
        """Number of codes per image (grid_size squared)."""
        return self.grid_size**2

    @property
    def codebook_size(self) -> int:
        """Number of entries in the codebook."""
        return self.vq.config.num_embeddings

    @property
    def code_dim(self) -> int:
        """Dimension of each codebook vector."""
        return self.vq.config.embed_dim

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map images (B, 3, H, W) in [-1, 1] to codes (B, N), row-major over the grid."""
        return self._nearest_codes(self._latents(pixels))

    @torch.no_grad()
    def quantized(self, pixels: torch.Tensor) -> torch.Tensor:
        """The code vectors (B, N, code_dim) of images (B, 3, H, W): the codebook rows
        (l2-normalised if configured) the decoder reads, row-major over the grid."""
        return self._code_vectors(self.encode(pixels))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Map codes (B, N) back to images (B, 3, H, W), roughly in [-1, 1]."""
        if codes.dim() != 2 or codes.shape[1] != self.num_tokens:
            raise ValueError(f"expected codes of shape (batch, {self.num_tokens}), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got values outside")
        return self._decode_vectors(self._code_vectors(codes))

    def forward(self, pixels: torch.Tensor) -> VQOutput:
        """Encode, quantise and decode `pixels`, returning reconstruction, codes and VQ losses."""
        latents = self._latents(pixels)
        codes = self._nearest_codes(latents)
        quantized = self._code_vectors(codes)
        codebook_loss = F.mse_loss(quantized, latents.detach())
        commitment_loss = self.commitment_beta * F.mse_loss(latents, quantized.detach())
        # Straight-through estimator: decode the code vectors, pass their gradient to the encoder.
        straight_through = latents + (quantized - latents).detach()
        return VQOutput(
            reconstruction=self._decode_vectors(straight_through),
            codes=codes,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            straight_through=straight_through,
        )

    def loss(
        self,
        pixels: torch.Tensor,
        recon_weight_l1: float = 1.0,
        recon_weight_l2: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Training losses: `loss` (total), `recon_l1`, `recon_l2`, `codebook`, `commitment`;
        plus the batch's reconstruction `psnr` (dB) and `codebook_usage` for monitoring."""
        return self._losses(pixels, self(pixels), recon_weight_l1, recon_weight_l2)

    def _losses(self, pixels: torch.Tensor, output: VQOutput, recon_weight_l1: float, recon_weight_l2: float) -> dict[str, torch.Tensor]:
        """`loss`'s dictionary for the forward pass `output` of `pixels`."""
        recon_l1 = F.l1_loss(output.reconstruction, pixels)
        recon_l2 = F.mse_loss(output.reconstruction, pixels)
        total = recon_weight_l1 * recon_l1 + recon_weight_l2 * recon_l2 + output.codebook_loss + output.commitment_loss
        return {
            "loss": total,
            "recon_l1": recon_l1,
            "recon_l2": recon_l2,
            "codebook": output.codebook_loss,
            "commitment": output.commitment_loss,
            # monitoring only (no gradient): what the training log reports
            "psnr": torch.tensor(psnr(pixels, output.reconstruction)),
            "codebook_usage": torch.tensor(codebook_usage(output.codes, self.codebook_size)),
        }

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encoder output as (B, N, code_dim) vectors, l2-normalised if configured."""
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, self.image_size, self.image_size):
            raise ValueError(f"expected pixels of shape (batch, 3, {self.image_size}, {self.image_size}), got {tuple(pixels.shape)}")
        # Weights may be bf16/fp16 (a converted checkpoint); processors give float32.
        latents = self.vq.quant_conv(self.vq.encoder(pixels.to(self.vq.quant_conv.weight.dtype)))
        latents = latents.permute(0, 2, 3, 1).reshape(pixels.shape[0], self.num_tokens, self.code_dim)
        return F.normalize(latents, dim=-1) if self.l2_normalize else latents

    def _codebook(self) -> torch.Tensor:
        """Codebook rows (codebook_size, code_dim), l2-normalised if configured."""
        weight = self.vq.quantize.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_normalize else weight

    @torch.no_grad()
    def _nearest_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """Index (B, N) of the Euclidean-nearest codebook row for each latent vector."""
        codebook = self._codebook()
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 is the same for every code.
        distances = codebook.pow(2).sum(-1) - 2 * latents @ codebook.T
        return distances.argmin(dim=-1)

    def _code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Look up codes (B, N) as vectors (B, N, code_dim), differentiable w.r.t. the codebook."""
        return self._codebook()[codes]

    def _decode_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Decode (B, N, code_dim) vectors laid out row-major on the grid into pixels."""
        grid = vectors.reshape(vectors.shape[0], self.grid_size, self.grid_size, self.code_dim)
        hidden = self.vq.post_quant_conv(grid.permute(0, 3, 1, 2).contiguous())
        return self.vq.decoder(hidden)
