"""Rewards for generated images (the `modal_core_rewards` hook of the image plugin).

- `shapes_checker`: the deterministic judge of the shapes world against the prompt
  (a shapes caption): the mean of its five checks (colours, shapes, whole objects,
  count, left-right order), so a picture that gets some of a prompt right scores
  between 0 and 1 (option `check`: one check's name alone, e.g. `position_ok`).
- `understanding_self_reward`: the model being tuned looks at its own picture through
  its understanding path and is asked a yes/no question for each object the prompt
  names ("is there a red circle?"); by default the frozen starting model answers (option
  `judge: policy`: the model being tuned); an image scores the mean over its questions of
  P(yes) / (P(yes) + P(no)), each the likelihood of the whole answer.
- `clip_score`: the cosine similarity of image and prompt embeddings of a local
  transformers `CLIPModel` or `SiglipModel` checkpoint (option `path`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from modal_core.data.chat import question_answer
from modal_core.data.segments import Media
from modal_core.errors import RecipeError
from modal_core.preference.rewards import RewardContext
from modal_core_images.evaluation.shapes_checker import check_caption

CHECKS = ("colour_ok", "shape_ok", "both_ok", "count_ok", "position_ok")
DEFAULT_SPLIT = r" left of | right of | and |, "
"""Where a prompt is cut into the object phrases the self-reward asks about."""


def shapes_checker(options: dict[str, Any], context: RewardContext):
    """The shapes checker's verdict on each image for its prompt (options: `check`)."""
    check = options.get("check")
    if check is not None and check not in CHECKS:
        raise RecipeError(f"reward shapes_checker: option check must be one of {', '.join(CHECKS)}, got {check!r}")

    def reward(prompts: Sequence[str], images: Sequence[Any], metadata: Sequence[dict]) -> list[float]:
        scores = []
        for prompt, image in zip(prompts, images):
            verdict = check_caption(image, prompt)
            scores.append(float(verdict[check]) if check else sum(verdict.values()) / len(verdict))
        return scores

    return reward


def _answer_log_likelihoods(model: Any, context: RewardContext, samples: list) -> torch.Tensor:
    """Log-likelihood (B,) under `model` of each sample's supervised answer (its tokens and the end of the turn)."""
    batch = context.collator.left_padded(samples).to(context.device)
    embeds, token_ids = model.embed(batch.input_ids, batch.token_ids, batch.media)
    hidden = model.transformer(embeds, batch.attention_mask, batch.position_ids).hidden[:, :-1]  # (B, T-1, hidden)
    targets = token_ids[:, 1:]
    answer = batch.supervised[:, 1:] & (batch.token_head[:, 1:] == model.head_index("text"))  # (B, T-1)
    log_probs = torch.zeros(answer.shape, device=hidden.device)
    log_probs[answer] = model.logits("text", hidden[answer]).float().log_softmax(dim=-1).gather(-1, targets[answer][:, None]).squeeze(-1)
    return log_probs.sum(dim=1)


def understanding_self_reward(options: dict[str, Any], context: RewardContext):
    """P(yes) of the model's own answers about its image (options: `question`, with
    `{object}`; `split`, a regular expression cutting the prompt into objects; `yes`,
    `no`, the answers; `modality`, the understanding modality; `judge`: `reference`,
    the default, asks the frozen starting model, so the reward stays the same while the
    policy trains, `policy` the model being tuned). P(yes) is the likelihood of the whole
    answer "yes" (with the end of the turn) normalised over "yes" and "no", so answers of
    several tokens compare fairly."""
    template = str(options.get("question", "is there {object}?"))
    if "{object}" not in template:
        raise RecipeError(f"reward understanding_self_reward: option question must contain {{object}}, got {template!r}")
    split = re.compile(str(options.get("split", DEFAULT_SPLIT)))
    answers = (str(options.get("yes", "yes")), str(options.get("no", "no")))
    inputs = [name for name, runtime in context.collator.modalities.items() if runtime.spec.direction == "input"]
    modality = options.get("modality") or (inputs[0] if len(inputs) == 1 else None)
    if modality not in inputs:
        raise RecipeError(f"reward understanding_self_reward: option modality must name one of the model's input modalities {inputs}")
    judge = str(options.get("judge", "reference"))
    if judge not in ("reference", "policy"):
        raise RecipeError(f"reward understanding_self_reward: option judge must be reference or policy, got {judge!r}")

    @torch.no_grad()
    def reward(prompts: Sequence[str], images: Sequence[Any], metadata: Sequence[dict]) -> torch.Tensor:
        owners, samples = [], []
        for index, (prompt, image) in enumerate(zip(prompts, images)):
            for phrase in (p.strip() for p in split.split(prompt)):
                if phrase:
                    question = template.format(object=phrase)
                    samples += [question_answer(question, answer, [Media(modality, image)]) for answer in answers]
                    owners.append(index)
        with context.judge(frozen=judge == "reference") as model:
            was_training = model.training
            model.eval()
            try:
                likelihoods = _answer_log_likelihoods(model, context, samples).view(-1, 2)  # (Q, [yes, no])
            finally:
                model.train(was_training)
        p_yes = likelihoods.softmax(dim=-1)[:, 0].cpu()
        owner = torch.tensor(owners)
        totals = torch.zeros(len(prompts)).index_add_(0, owner, p_yes)
        counts = torch.zeros(len(prompts)).index_add_(0, owner, torch.ones_like(p_yes))
        return totals / counts.clamp(min=1)

    return reward


def clip_score(options: dict[str, Any], context: RewardContext):
    """Image-prompt cosine similarity under a local CLIP or SigLIP checkpoint (options:
    `path`, `device` (default the model's), `template` with `{prompt}`)."""
    from transformers import AutoModel, AutoProcessor, CLIPModel, SiglipModel

    path = options.get("path")
    if not path:
        raise RecipeError("reward clip_score needs options.path: a local directory of a transformers CLIPModel or SiglipModel")
    scorer = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    if not isinstance(scorer, (CLIPModel, SiglipModel)):
        raise RecipeError(f"reward clip_score: {path} holds a {type(scorer).__name__}, expected a CLIPModel or SiglipModel")
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    device = torch.device(options.get("device") or context.device)
    scorer.to(device)
    template = str(options.get("template", "{prompt}"))
    padding = "max_length" if isinstance(scorer, SiglipModel) else True  # SigLIP was trained on max-length padding

    @torch.no_grad()
    def reward(prompts: Sequence[str], images: Sequence[Any], metadata: Sequence[dict]) -> torch.Tensor:
        texts = [template.format(prompt=prompt) for prompt in prompts]
        inputs = processor(text=texts, images=list(images), return_tensors="pt", padding=padding, truncation=True).to(device)
        output = scorer(**inputs)
        return (output.image_embeds * output.text_embeds).sum(dim=-1).cpu()  # both are unit vectors

    return reward


REWARDS = {"shapes_checker": shapes_checker, "understanding_self_reward": understanding_self_reward, "clip_score": clip_score}
