"""From a recipe's `preference` section to the training module, the batch splitter and
the guard callback that `modal_core.training.run.train` uses instead of the plain ones."""

from __future__ import annotations

from pathlib import Path

from lightning import Callback
from omegaconf import DictConfig

from modal_core.assemble import Assembled
from modal_core.errors import RecipeError
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import PluginManager
from modal_core.preference.batches import PromptCollator
from modal_core.preference.guard import UnderstandingGuard
from modal_core.preference.log_probs import GuidedPolicy
from modal_core.preference.module import PreferenceSettings, PreferenceTrainingModule
from modal_core.preference.pairs import read_pairs
from modal_core.preference.rewards import RewardContext, build_reward
from modal_core.preference.rollout import Sampler


def tuned_modality(recipe: DictConfig, assembled: Assembled) -> str:
    """The output modality `preference.modality` names, or the model's only one."""
    outputs = sorted(name for name, runtime in assembled.modalities.items() if runtime.spec.direction == "output")
    name = recipe.preference.modality
    if name is None and len(outputs) == 1:
        return outputs[0]
    if name not in outputs:
        raise RecipeError(f"preference.modality: name the output modality to tune; this model has {outputs or 'none'}")
    return name


def preference_task(
    recipe: DictConfig, plugins: PluginManager, assembled: Assembled, optim: dict, total_steps: int, run_dir: Path
) -> tuple[PreferenceTrainingModule, PromptCollator, list[Callback]]:
    """The preference-tuning module, the collate function of its batches and its callbacks."""
    settings = recipe.preference
    modality = tuned_modality(recipe, assembled)
    model, collator = assembled.model, assembled.collator
    rewards = None
    if settings.rewards:
        entries = settings.rewards
        build_reward(entries, plugins, None, check_only=True)  # unknown names fail before training starts

        def rewards(model_on_device, reference):
            device = next(model_on_device.parameters()).device
            context = RewardContext(model_on_device, collator, assembled.tokenizer, device, reference)
            return build_reward(entries, plugins, context)

    policy = GuidedPolicy(modality, float(settings.cfg_scale), float(settings.temperature), str(settings.cfg_schedule))
    runtime = assembled.modalities[modality]
    sampler = Sampler(collator, runtime, policy, settings.group_size)
    pairs = None
    if settings.method == "dpo" and settings.pairs:
        path = settings.pairs

        def pairs(model_on_device):
            return read_pairs(path, model_on_device, modality, runtime)

    module = PreferenceTrainingModule(
        model,
        list(recipe.train),
        optim,
        total_steps,
        PreferenceSettings(
            method=settings.method,
            group_size=settings.group_size,
            clip=settings.clip,
            kl_weight=settings.kl_weight,
            updates_per_rollout=settings.updates_per_rollout,
            beta=settings.beta,
            sft_weight=settings.sft_weight,
            sample_every_n_steps=settings.sample_every_n_steps,
            seed=recipe.seed,
        ),
        sampler,
        run_dir,
        rewards,
        pairs,
    )
    return module, PromptCollator(collator, modality), _guard(recipe, plugins, assembled, run_dir)


def _guard(recipe: DictConfig, plugins: PluginManager, assembled: Assembled, run_dir: Path) -> list[Callback]:
    guard = recipe.preference.guard
    if not guard.suite:
        return []
    suites = plugins.evaluators()
    if guard.suite not in suites:
        raise RecipeError(f"preference.guard.suite: unknown suite {guard.suite!r}; installed: {sorted(suites)}")

    def pipeline_of(model) -> Pipeline:
        return Pipeline(Assembled(model, assembled.tokenizer, assembled.collator, assembled.modalities))

    return [
        UnderstandingGuard(
            suites[guard.suite],
            dict(guard.options),
            guard.metric,
            guard.every_n_steps,
            guard.margin,
            guard.action == "stop",
            run_dir,
            pipeline_of,
        )
    ]
