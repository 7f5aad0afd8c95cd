"""Rollouts: groups of items sampled per prompt with the decode engine, decoded and rewarded.

Sampling runs the batched, KV-cached `DecodeEngine` (all prompts' groups in one doubled
CFG batch), the model in eval mode and without gradients. The reference model is the
recipe's starting point, frozen: with LoRA the same model with its adapters switched off
(no second copy of the weights), otherwise a frozen copy kept outside the module tree, so
checkpoints never hold it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from modal_core.data.chat import caption_to_image
from modal_core.data.collator import Collator, ModalityRuntime
from modal_core.generation.engine import DecodeEngine
from modal_core.model.lora import lora_disabled, lora_layers
from modal_core.model.unified import UnifiedModel
from modal_core.preference.log_probs import GuidedPolicy, guided_code_scores


class ReferenceModel:
    """The frozen model that KL penalties and DPO compare the policy with."""

    def __init__(self, model: UnifiedModel) -> None:
        self._copy = None if lora_layers(model) else copy.deepcopy(model).eval().requires_grad_(False)

    @contextmanager
    def active(self, policy: UnifiedModel) -> Iterator[UnifiedModel]:
        """The reference model to compute with while the context is open."""
        if self._copy is None:
            with lora_disabled(policy):
                yield policy
        else:
            yield self._copy


@dataclass
class Rollout:
    """S = prompts x G sampled items: row s belongs to prompt s // G."""

    prompts: list[str]  # (S,) each prompt repeated G times
    codes: torch.Tensor  # (S, N)
    items: list[Any]  # (S,) decoded outputs
    rewards: torch.Tensor  # (S,)
    items_per_second: float


class Sampler:
    """Draws and rewards groups of items for prompts: `sample(model, prompts, sources, seed)`."""

    def __init__(self, collator: Collator, runtime: ModalityRuntime, policy: GuidedPolicy, group_size: int, reward: Any = None) -> None:
        """`reward`: a `WeightedReward` (set it before sampling; DPO on a file needs none)."""
        self.collator, self.runtime, self.policy = collator, runtime, policy
        self.group_size, self.reward = group_size, reward
        self._engines: dict[int, DecodeEngine] = {}

    def _engine(self, model: UnifiedModel) -> DecodeEngine:
        # One engine (and static KV cache) per model object: the policy and a reference copy.
        if id(model) not in self._engines:
            self._engines[id(model)] = DecodeEngine(model)
        return self._engines[id(model)]

    def sample(self, model: UnifiedModel, prompts: Sequence[str], sources: Sequence[str], seed: int) -> Rollout:
        """G items for every prompt, drawn with `seed`, and their rewards."""
        modality = self.policy.modality
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            samples = [caption_to_image(prompt, None, modality) for prompt in prompts]
            codes = self._engine(model).generate_codes(
                self.collator,
                samples,
                modality,
                self.runtime.num_positions,
                self.group_size,
                self.policy.cfg_scale,
                self.policy.temperature,
                seed=seed,
                cfg_schedule=self.policy.cfg_schedule,
            )
            with torch.no_grad():
                items = self.runtime.spec.to_output(model.encoders[modality].decode(codes).cpu())
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - start
        repeated = [prompt for prompt in prompts for _ in range(self.group_size)]
        metadata = [{"source": source} for source in sources for _ in range(self.group_size)]
        rewards = self.reward(repeated, items, metadata)
        return Rollout(repeated, codes, items, rewards, len(items) / max(seconds, 1e-9))

    @torch.no_grad()
    def log_probs(self, model: UnifiedModel, rollout: Rollout) -> torch.Tensor:
        """Per-code log-probabilities (S, N) of the rollout's codes under `model`, without gradients."""
        return guided_code_scores(model, self.collator, rollout.prompts, rollout.codes, self.policy).log_probs
