"""Reward functions from the `modal_core_rewards` hook, combined as a recipe weighs them.

A plugin's hook returns name -> factory; `factory(options, context)` builds the reward
function `reward(prompts, items, metadata) -> scores` with `options` from the recipe and
`context` (a `RewardContext`: the policy model, its collator and tokenizer, for rewards
that ask the model itself). A reward scores a whole batch at once: `prompts` (n,),
`items` (n,) the decoded outputs (PIL images for images), `metadata` (n,) dicts, and it
returns n floats (a sequence or a tensor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from modal_core.data.collator import Collator
from modal_core.errors import RecipeError
from modal_core.model.unified import UnifiedModel
from modal_core.plugins import PluginManager

RewardFunction = Callable[[Sequence[str], Sequence[Any], Sequence[dict]], Any]


@dataclass
class RewardContext:
    """What a reward factory may use: the model being tuned (its understanding path for
    self-rewards), its collator and text tokenizer, the device it runs on, and
    `reference`: a callable whose context yields the frozen starting model (None: no
    reference, e.g. outside training)."""

    model: UnifiedModel
    collator: Collator
    tokenizer: Any
    device: torch.device
    reference: Callable[[], AbstractContextManager[UnifiedModel]] | None = None

    def judge(self, frozen: bool) -> AbstractContextManager[UnifiedModel]:
        """A context yielding the model a self-reward asks: the frozen reference when
        `frozen` and there is one, else the model being tuned."""
        return self.reference() if frozen and self.reference is not None else nullcontext(self.model)


class WeightedReward:
    """The weighted sum of named rewards; `last_parts` keeps each one's latest scores."""

    def __init__(self, parts: dict[str, tuple[float, RewardFunction]]) -> None:
        self.parts = parts
        self.last_parts: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: Sequence[str], items: Sequence[Any], metadata: Sequence[dict]) -> torch.Tensor:
        """Scores (n,) of n items, float32 on the CPU."""
        total = torch.zeros(len(prompts))
        for name, (weight, reward) in self.parts.items():
            scores = torch.as_tensor(reward(prompts, items, metadata), dtype=torch.float32).detach().cpu().flatten()
            if scores.numel() != len(prompts):
                raise RecipeError(f"reward {name!r} returned {scores.numel()} scores for {len(prompts)} items; it must score every item")
            self.last_parts[name] = scores
            total += weight * scores
        return total


def build_reward(
    entries: Sequence[Any], plugins: PluginManager, context: RewardContext | None, check_only: bool = False, key: str = "preference.rewards"
) -> WeightedReward | None:
    """A `WeightedReward` of recipe entries `{name, weight, options}` (a recipe's `key`);
    with `check_only`, only check that every name is installed (and return None)."""
    factories = plugins.rewards()
    if not entries:
        raise RecipeError(f"{key}: name at least one reward; installed: {sorted(factories) or 'none'}")
    for index, entry in enumerate(entries):
        if entry.name not in factories:
            raise RecipeError(f"{key}[{index}].name: unknown reward {entry.name!r}; installed: {sorted(factories) or 'none'}")
    if check_only:
        return None
    return WeightedReward({entry.name: (float(entry.weight), factories[entry.name](dict(entry.options), context)) for entry in entries})
