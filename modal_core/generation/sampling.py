"""Turning logits into tokens: classifier-free guidance, temperature, top-k, top-p."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from modal_core.generation.settings import check_guidance


def guided_logits(
    conditional: torch.Tensor, unconditional: torch.Tensor, scale: float | torch.Tensor, plausibility: float | None = None
) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond) (`scale` a number or a
    tensor that broadcasts against the logits). With `plausibility` a, a token whose
    conditional probability is below a times the conditional's most probable token's
    is excluded (-inf): the adaptive plausibility constraint of contrastive decoding
    (Li et al., 2023), which keeps guidance from raising tokens the caption itself rules out."""
    guided = unconditional + scale * (conditional - unconditional)
    if plausibility is None:
        return guided
    log_probs = conditional.float().log_softmax(dim=-1)
    plausible = log_probs >= log_probs.max(dim=-1, keepdim=True).values + math.log(plausibility)
    return guided.masked_fill(~plausible, float("-inf"))


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance of one generation call.

    `scale`: the guidance scale (1 = none). `schedule`: "constant" (Janus) or "linear",
    rising from 1 at the first code to `scale` at the last (the schedule of MaskGIT-style
    and MAR samplers), so the first codes, which place the objects, are drawn unguided.
    `plausibility`: None, or a in (0, 1] for `guided_logits`' plausibility constraint."""

    scale: float = 5.0
    schedule: str = "constant"
    plausibility: float | None = None

    def check(self) -> None:
        """Reject settings that have no meaning, naming the setting."""
        check_guidance(self.scale, self.schedule, self.plausibility)

    def scales(self, num_positions: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The scale at each of `num_positions` codes, float32 (N,)."""
        if self.schedule == "constant" or num_positions == 1:
            return torch.full((num_positions,), float(self.scale), device=device)
        return 1 + (self.scale - 1) * torch.arange(num_positions, device=device, dtype=torch.float32) / (num_positions - 1)


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
