"""`PreferenceTrainingModule`: the training loop's preference-tuning mode (GRPO, DPO).

It is `UnifiedTrainingModule` with another `training_step`; optimizer, schedule,
checkpoints, logging and resuming are the loop's own. Each batch of the data loader is a
`PromptBatch`: its generation prompts drive the preference loss, its other samples add
their next-token loss times `sft_weight` (understanding and text kept in shape).

GRPO step: sample `group_size` items per prompt with the policy (every
`updates_per_rollout` steps; the steps between reuse that rollout, so the ratio clip
binds), reward them, normalise within groups, clipped policy gradient on the guided
code log-probabilities plus `kl_weight` x KL to the reference. DPO step: pairs from the
preference file (in order, wrapping), or the best and the worst of `group_size` items
the reference draws for each prompt and the reward ranks (pairs that do not depend on
training: the offline data set the reference would give, drawn as needed; groups whose
items all score the same give no pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modal_core.checkpoints.run_folder import is_first_process
from modal_core.errors import RecipeError
from modal_core.model.unified import UnifiedModel
from modal_core.preference.batches import PromptBatch
from modal_core.preference.log_probs import GuidedPolicy, guided_code_scores
from modal_core.preference.losses import clipped_policy_loss, dpo_loss, group_advantages, zero_variance_fraction
from modal_core.preference.pairs import PreferencePairs
from modal_core.preference.rollout import ReferenceModel, Rollout, Sampler
from modal_core.training.module import UnifiedTrainingModule

ROLLOUT_DIR = "rollouts"
"""Run-folder subfolder of the rollout sample grids."""
GRID_ITEMS = 32


@dataclass(frozen=True)
class PreferenceSettings:
    """The recipe's `preference` keys the step needs, as plain values."""

    method: str
    group_size: int
    clip: float
    kl_weight: float
    updates_per_rollout: int
    beta: float
    sft_weight: float
    sample_every_n_steps: int
    seed: int


@dataclass
class _PolicyRollout:
    rollout: Rollout
    old_log_probs: torch.Tensor  # (S, N)
    reference_log_probs: torch.Tensor  # (S, N)
    advantages: torch.Tensor  # (S,)


class PreferenceTrainingModule(UnifiedTrainingModule):
    """Tunes an output modality of a `UnifiedModel` by GRPO or DPO (see the module docstring)."""

    def __init__(
        self,
        model: UnifiedModel,
        train: list[str],
        optim: dict,
        total_steps: int,
        settings: PreferenceSettings,
        sampler: Sampler,
        run_dir: Path,
        rewards: Any = None,
        pairs: Any = None,
    ) -> None:
        """`sampler` draws rollouts; `rewards`: a callable `rewards(model, reference) ->
        WeightedReward` (`reference()`: a context yielding the frozen reference) and
        `pairs`: a callable `pairs(model) -> PreferencePairs` (DPO's preference file;
        None: sampled pairs), both called when training starts, the model on its device."""
        super().__init__(model, train, optim, total_steps)
        self.settings, self.sampler, self.run_dir = settings, sampler, Path(run_dir)
        self._build_rewards = rewards
        self._read_pairs = pairs
        self._pairs: PreferencePairs | None = None
        self._reference: ReferenceModel | None = None
        self._rollout: _PolicyRollout | None = None

    @property
    def policy(self) -> GuidedPolicy:
        """The sampling distribution being tuned."""
        return self.sampler.policy

    def on_fit_start(self) -> None:
        # The reference is taken here, once the weights are loaded and on their device.
        self._reference = ReferenceModel(self.model)
        if self._build_rewards is not None:
            self.sampler.reward = self._build_rewards(self.model, lambda: self._reference.active(self.model))
        if self._read_pairs is not None:
            self._pairs = self._read_pairs(self.model)

    def training_step(self, batch: PromptBatch, batch_idx: int) -> torch.Tensor:
        logged = self._is_logged_step()
        size = max(1, len(batch.prompts) + (batch.supervised.input_ids.shape[0] if batch.supervised is not None else 0))
        if self.settings.method == "grpo":
            loss = self._grpo_loss(batch, logged, size)
        else:
            loss = self._dpo_loss(batch, logged, size)
        if batch.supervised is not None and self.settings.sft_weight > 0:
            output = self.model(**batch.supervised.model_inputs())
            sft_loss, global_sft = self._global_token_mean(output)
            loss = loss + self.settings.sft_weight * sft_loss
            if logged:
                self.log("train/sft_loss", global_sft, batch_size=size)
        if logged:
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)
        return loss

    def validation_step(self, batch: PromptBatch, batch_idx: int) -> None:
        """The next-token loss of the batch's samples that are not generation prompts."""
        if batch.supervised is not None:
            super().validation_step(batch.supervised, batch_idx)

    # -- GRPO -------------------------------------------------------------------------
    def _grpo_loss(self, batch: PromptBatch, logged: bool, size: int) -> torch.Tensor:
        step = self.trainer.global_step
        if self._rollout is None or step % self.settings.updates_per_rollout == 0:
            if not batch.prompts:  # a batch of supervised samples only: their loss alone
                self._rollout = None
                return torch.zeros((), device=self.device, requires_grad=True)
            self._rollout = self._policy_rollout(batch, step)
        current = self._rollout
        scores = guided_code_scores(self.model, self.sampler.collator, current.rollout.prompts, current.rollout.codes, self.policy)
        loss, kl = clipped_policy_loss(
            scores.log_probs,
            current.old_log_probs,
            current.advantages,
            self.settings.clip,
            current.reference_log_probs,
            self.settings.kl_weight,
        )
        if logged:
            rewards = current.rollout.rewards
            group = self.settings.group_size
            self.log("train/reward_mean", rewards.mean(), prog_bar=True, batch_size=size)
            self.log("train/reward_std", rewards.std(unbiased=False), batch_size=size)
            self.log("train/group_reward_std", rewards.view(-1, group).std(dim=1, unbiased=False).mean(), batch_size=size)
            self.log("train/zero_variance_groups", zero_variance_fraction(rewards, group), batch_size=size)
            self.log("train/kl", kl.detach(), batch_size=size)
            self.log("train/entropy", scores.entropy.detach().mean(), batch_size=size)
            self.log("train/rollout_items_per_second", current.rollout.items_per_second, batch_size=size)
            self._log_reward_parts(size)
        return loss

    def _policy_rollout(self, batch: PromptBatch, step: int) -> _PolicyRollout:
        rollout = self.sampler.sample(self.model, batch.prompts, batch.sources, seed=self.settings.seed + step)
        old = self.sampler.log_probs(self.model, rollout)
        with self._reference.active(self.model) as reference:
            reference_log_probs = self.sampler.log_probs(reference, rollout)
        self._save_grid(rollout, step)
        advantages = group_advantages(rollout.rewards, self.settings.group_size).to(old.device)
        return _PolicyRollout(rollout, old, reference_log_probs, advantages)

    # -- DPO --------------------------------------------------------------------------
    def _dpo_loss(self, batch: PromptBatch, logged: bool, size: int) -> torch.Tensor:
        step = self.trainer.global_step
        pairs = (
            self._pairs.take(step * self.trainer.datamodule.batch_size, self.trainer.datamodule.batch_size)
            if self._pairs
            else self._sampled_pairs(batch, step)
        )
        if pairs is None:  # every group tied: nothing to prefer in this batch
            return torch.zeros((), device=self.device, requires_grad=True)
        prompts = pairs.prompts + pairs.prompts
        codes = torch.cat([pairs.chosen, pairs.rejected]).to(self.device)
        policy = guided_code_scores(self.model, self.sampler.collator, prompts, codes, self.policy).log_probs.sum(dim=1)
        with torch.no_grad(), self._reference.active(self.model) as reference:
            base = guided_code_scores(reference, self.sampler.collator, prompts, codes, self.policy).log_probs.sum(dim=1)
        count = len(pairs.prompts)
        loss, accuracy = dpo_loss(policy[:count], policy[count:], base[:count], base[count:], self.settings.beta)
        if logged:
            self.log("train/pairs", float(count), batch_size=size)
            self.log("train/preference_accuracy", accuracy, batch_size=size)
            self.log("train/chosen_log_ratio", (policy[:count] - base[:count]).detach().mean(), batch_size=size)
            self.log("train/rejected_log_ratio", (policy[count:] - base[count:]).detach().mean(), batch_size=size)
        return loss

    def _sampled_pairs(self, batch: PromptBatch, step: int) -> PreferencePairs | None:
        """The best and the worst of each prompt's group drawn by the reference; None when every group tied."""
        if not batch.prompts:
            raise RecipeError("preference.method dpo without `pairs`: a batch held no generation prompt to sample pairs for")
        with self._reference.active(self.model) as reference:
            rollout = self.sampler.sample(reference, batch.prompts, batch.sources, seed=self.settings.seed + step)
        self._save_grid(rollout, step)
        group = self.settings.group_size
        rewards = rollout.rewards.view(-1, group)
        best, worst = rewards.argmax(dim=1), rewards.argmin(dim=1)
        keep = (rewards.max(dim=1).values > rewards.min(dim=1).values).nonzero().flatten()
        if self._is_logged_step():
            self.log("train/reward_mean", rollout.rewards.mean(), prog_bar=True, batch_size=len(rollout.prompts))
            self.log("train/zero_variance_groups", zero_variance_fraction(rollout.rewards, group), batch_size=len(rollout.prompts))
        if keep.numel() == 0:
            return None
        rows = keep * group
        return PreferencePairs(
            [batch.prompts[i] for i in keep.tolist()], rollout.codes[rows + best[keep]], rollout.codes[rows + worst[keep]]
        )

    # -- logging ----------------------------------------------------------------------
    def _log_reward_parts(self, size: int) -> None:
        parts = self.sampler.reward.last_parts
        if len(parts) > 1:
            for name, scores in parts.items():
                self.log(f"train/reward_{name}", scores.mean(), batch_size=size)

    def _save_grid(self, rollout: Rollout, step: int) -> None:
        every = self.settings.sample_every_n_steps
        preview = self.sampler.runtime.spec.save_preview
        if not every or step % every or preview is None or not is_first_process():
            return
        count = min(GRID_ITEMS, len(rollout.items))
        captions = [f"{reward:.2f} {prompt}" for prompt, reward in zip(rollout.prompts[:count], rollout.rewards[:count].tolist())]
        preview(rollout.items[:count], captions, self.run_dir / ROLLOUT_DIR / f"step-{step:06d}.png")
