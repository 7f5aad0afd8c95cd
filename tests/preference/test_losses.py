"""GRPO's and DPO's objectives against direct computations, and a two-token toy policy
whose policy gradient moves probability to the rewarded token."""

from __future__ import annotations

import math

import pytest
import torch

from modal_core.errors import ModelInputError
from modal_core.preference.losses import (
    clipped_policy_loss,
    dpo_loss,
    group_advantages,
    kl_to_reference,
    zero_variance_fraction,
)


def test_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    advantages = group_advantages(rewards, group_size=4, eps=0.0 + 1e-4)
    first = [1.0, 0.0, 0.0, 1.0]
    mean = sum(first) / 4
    std = math.sqrt(sum((r - mean) ** 2 for r in first) / 4)
    expected = [(r - mean) / (std + 1e-4) for r in first] + [0.0] * 4
    assert advantages.tolist() == pytest.approx(expected, abs=1e-6)
    assert zero_variance_fraction(rewards, 4).item() == 0.5


def test_advantages_reject_a_partial_group():
    with pytest.raises(ModelInputError, match="whole groups of 4"):
        group_advantages(torch.zeros(6), group_size=4)


def test_the_clipped_loss_equals_a_direct_computation():
    torch.manual_seed(0)
    log_probs, old, reference = (torch.randn(4, 3, dtype=torch.float64) * 0.3 - 1 for _ in range(3))
    advantages = torch.tensor([1.5, -0.5, 0.25, -1.25])
    clip, weight = 0.2, 0.1
    loss, kl = clipped_policy_loss(log_probs, old, advantages, clip, reference, weight)
    total, kl_total = 0.0, 0.0
    for s in range(4):
        for n in range(3):
            lp, o, r = float(log_probs[s, n]), float(old[s, n]), float(reference[s, n])
            ratio = math.exp(lp - o)
            a = float(advantages[s])
            clipped = min(max(ratio, 1 - clip), 1 + clip)
            token_kl = math.exp(r - lp) - (r - lp) - 1
            total += -min(ratio * a, clipped * a) + weight * token_kl
            kl_total += token_kl
    assert loss.item() == pytest.approx(total / 12, rel=1e-5)
    assert kl.item() == pytest.approx(kl_total / 12, rel=1e-5)


def test_the_kl_is_zero_where_policy_and_reference_agree_and_positive_elsewhere():
    log_probs = torch.tensor([-0.5, -2.0, -1.0])
    assert kl_to_reference(log_probs, log_probs.clone()).tolist() == [0.0, 0.0, 0.0]
    assert (kl_to_reference(log_probs, log_probs + torch.tensor([0.3, -0.3, 1.0])) > 0).all()


def test_dpo_loss_equals_the_closed_form():
    chosen, rejected = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -4.5])
    ref_chosen, ref_rejected = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -5.0])
    beta = 0.5
    loss, accuracy = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    margins = [beta * ((-3.0 + 3.5) - (-4.0 + 3.0)), beta * ((-5.0 + 4.0) - (-4.5 + 5.0))]
    expected = sum(math.log(1 + math.exp(-m)) for m in margins) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert accuracy.item() == 0.5  # the first pair is ranked right (+0.75), the second wrong (-0.75)


def test_the_policy_gradient_moves_probability_to_the_rewarded_token():
    """A two-token policy, groups sampled from it, reward 1 for token 1: a few steps of
    GRPO's loss raise that token's probability from 0.5 towards 1."""
    logits = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=0.5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        with torch.no_grad():
            tokens = torch.multinomial(logits.softmax(-1), 16, replacement=True, generator=generator)  # one group of 16
            old = logits.log_softmax(-1)[tokens][:, None]
        rewards = (tokens == 1).float()
        log_probs = logits.log_softmax(-1)[tokens][:, None]
        loss, _ = clipped_policy_loss(log_probs, old, group_advantages(rewards, 16), clip=0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logits.softmax(-1)[1].item() > 0.95
