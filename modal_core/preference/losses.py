"""The objectives of preference tuning, on per-token log-probabilities.

GRPO (Shao et al., 2024, DeepSeekMath): each prompt's `G` samples are scored and their
rewards normalised within the group, `A = (r - mean) / (std + eps)`, so only how a
sample compares with its siblings matters; the policy-gradient loss is PPO's clipped
surrogate on each token's probability ratio to the policy that drew the samples, plus
`beta` times the k3 estimate of the KL divergence to a frozen reference,
`exp(ref - logp) - (ref - logp) - 1` (unbiased, non-negative, exactly 0 where the two
agree). DPO (Rafailov et al., 2023): `-log sigmoid(beta * ((pc - rc) - (pr - rr)))` with
`p`/`r` the sequence log-probabilities of the chosen `c` and rejected `r` item under the
policy and the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modal_core.errors import ModelInputError


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """Rewards (n * G,) of n consecutive groups of `group_size` normalised within their
    group: (r - group mean) / (group std + eps), the std without Bessel's correction.
    A group whose samples all score the same gets advantages 0 (it teaches nothing)."""
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ModelInputError(f"rewards: expected a flat tensor of whole groups of {group_size}, got shape {tuple(rewards.shape)}")
    groups = rewards.float().view(-1, group_size)  # (n, G)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, unbiased=False, keepdim=True)
    return ((groups - mean) / (std + eps)).flatten()


def zero_variance_fraction(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Share of groups whose samples all got the same reward (no learning signal)."""
    groups = rewards.float().view(-1, group_size)
    return (groups.max(dim=1).values == groups.min(dim=1).values).float().mean()


def kl_to_reference(log_probs: torch.Tensor, reference_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference) at the sampled tokens (same shape
    as the inputs): `exp(ref - logp) - (ref - logp) - 1`."""
    difference = reference_log_probs - log_probs
    return difference.exp() - difference - 1


def clipped_policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    reference_log_probs: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's loss and the mean KL term, from token log-probabilities (S, N) of S samples
    of N tokens under the policy being trained, the policy that drew them (`old_log_probs`)
    and the reference, and one advantage (S,) per sample:

        mean over samples and tokens of
        -min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A) + kl_weight * KL

    with `ratio = exp(logp - old_logp)`. Every sample has the same number of tokens (an
    image's codes), so the per-sample and per-token means coincide."""
    ratio = (log_probs - old_log_probs).exp()  # (S, N)
    advantage = advantages[:, None].to(ratio.dtype)
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    loss = -surrogate
    kl = torch.zeros((), dtype=ratio.dtype, device=ratio.device)
    if reference_log_probs is not None:
        token_kl = kl_to_reference(log_probs, reference_log_probs)
        kl = token_kl.mean()
        loss = loss + kl_weight * token_kl
    return loss.mean(), kl


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, reference_chosen: torch.Tensor, reference_rejected: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's mean loss over pairs and the share of pairs whose implicit reward ranks the
    chosen item first, from sequence log-probabilities (P,) of each pair's items."""
    margin = beta * ((chosen - reference_chosen) - (rejected - reference_rejected))  # (P,)
    return -F.logsigmoid(margin).mean(), (margin > 0).float().mean()
