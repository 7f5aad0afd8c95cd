"""Quality measures for tokenizers: reconstruction PSNR and codebook usage."""

from __future__ import annotations

import math

import torch


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the `codebook_size` codes that occur at least once in `codes`."""
    if codebook_size <= 0:
        raise ValueError(f"codebook_size must be positive, got {codebook_size}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size})")
    return codes.unique().numel() / codebook_size


def psnr(reference: torch.Tensor, reconstruction: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak range 2).

    Both tensors are clamped to [-1, 1] first, as they would be when shown, and the
    mean squared error is taken over all elements at once; identical inputs give inf.
    """
    if reference.shape != reconstruction.shape:
        raise ValueError(f"shape mismatch: {tuple(reference.shape)} vs {tuple(reconstruction.shape)}")
    reference = reference.detach().float().clamp(-1.0, 1.0)
    reconstruction = reconstruction.detach().float().clamp(-1.0, 1.0)
    mse = torch.mean((reference - reconstruction) ** 2).item()
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(4.0 / mse)
