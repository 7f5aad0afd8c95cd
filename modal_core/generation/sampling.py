"""Turning logits into tokens: classifier-free guidance, temperature, top-k, top-p."""

from __future__ import annotations

import torch

from modal_core.errors import ModelInputError


def guided_logits(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond)."""
    return unconditional + scale * (conditional - unconditional)


MAX_TEMPERATURE = 10.0
"""Beyond this, sampling is uniform noise for any trained model: surely a typo."""
MAX_CFG_SCALE = 100.0
"""Guidance scales used in practice are 1-10; far larger ones only amplify noise."""


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Reject sampling settings that have no meaning."""
    if not (isinstance(temperature, (int, float)) and 0 <= temperature <= MAX_TEMPERATURE):
        raise ModelInputError(f"temperature must be a number in [0, {MAX_TEMPERATURE:g}] (0 = greedy), got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ModelInputError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ModelInputError(f"top_p must be in (0, 1], got {top_p}")


def check_guidance(scale: float) -> None:
    """Reject a classifier-free guidance scale outside [0, MAX_CFG_SCALE] (or not a number)."""
    if not (isinstance(scale, (int, float)) and 0 <= scale <= MAX_CFG_SCALE):
        raise ModelInputError(f"cfg scale must be a number in [0, {MAX_CFG_SCALE:g}] (1 = no guidance), got {scale!r}")


def sample_tokens(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of `logits` (B, V); temperature 0 means greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probabilities = filtered_logits(logits, temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


def filtered_logits(logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Float logits (B, V) divided by `temperature` (> 0), with the tokens outside
    top-k and outside the top-p nucleus set to -inf."""
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token once the mass before it already reaches top_p (the first always stays)
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return logits
