"""Learning-rate schedules as multipliers of the peak learning rate."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from modal_core.errors import RecipeError


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Linear warm-up to 1, then `constant` or `cosine` decay to `min_ratio` at `total_steps`."""
    if schedule not in ("constant", "cosine"):
        raise RecipeError(f"optim.schedule: expected 'constant' or 'cosine', got {schedule!r}")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def configure_adamw(
    parameters: list,
    total_steps: int,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    warmup_steps: int = 0,
    schedule: str = "constant",
    min_lr_ratio: float = 0.1,
) -> dict:
    """AdamW over `parameters` with the per-step schedule, in Lightning's
    `configure_optimizers` return format."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
    multiplier = lr_multiplier(schedule, warmup_steps, total_steps, min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
