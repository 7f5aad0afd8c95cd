"""Log-probabilities of an output modality's codes under the CFG-guided policy.

The decode engine draws each code from `softmax(guided / temperature)` with
`guided = uncond + scale * (cond - uncond)` (`sampling.guided_logits`), the conditional
and unconditional rows of one doubled batch, the scale constant or rising over the codes
(`preference.cfg_schedule`). Preference tuning optimises exactly that
distribution: the ratios of GRPO and the sequence log-probabilities of DPO must be those
of the distribution the samples came from, or the update is off-policy by the guidance
itself (optimising the conditional logits alone would score samples the guided sampler
rarely draws). Gradients flow into both halves, as guidance ties them.

Here the codes are teacher-forced: prompt and codes go through the model as one
sequence each, every code's logits read at the position before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from modal_core.data.chat import caption_to_image
from modal_core.data.collator import Collator
from modal_core.data.segments import Encoded, Media
from modal_core.errors import ModelInputError
from modal_core.generation.sampling import Guidance, guided_logits
from modal_core.model.unified import UnifiedModel


@dataclass(frozen=True)
class GuidedPolicy:
    """How codes are drawn: the output modality, the guidance scale, the temperature and
    how the scale runs over the codes (`sampling.Guidance`: constant or linear)."""

    modality: str
    cfg_scale: float
    temperature: float
    cfg_schedule: str = "constant"

    @property
    def guidance(self) -> Guidance:
        return Guidance(self.cfg_scale, self.cfg_schedule)


@dataclass
class CodeScores:
    """Per-code log-probabilities (S, N) of S code rows and the entropy (S, N) of the
    distribution each code was chosen from."""

    log_probs: torch.Tensor
    entropy: torch.Tensor


def guided_code_scores(
    model: UnifiedModel, collator: Collator, prompts: Sequence[str], codes: torch.Tensor, policy: GuidedPolicy
) -> CodeScores:
    """Scores of `codes` (S, N), row s drawn for `prompts[s]`, under `policy`."""
    if codes.ndim != 2 or codes.shape[0] != len(prompts):
        raise ModelInputError(f"codes: expected ({len(prompts)}, N), one row per prompt, got {tuple(codes.shape)}")
    rows = [
        caption_to_image(prompt, Media(policy.modality, Encoded(row.cpu()), supervised=True), policy.modality)
        for prompt, row in zip(prompts, codes)
    ]
    batch = collator.left_padded(rows + [replace(row, drop_condition=True) for row in rows]).to(codes.device)
    embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
    hidden = model.transformer(embeds, batch.attention_mask, batch.position_ids).hidden  # (2S, T, hidden)
    predicts = batch.supervised[:, 1:] & (batch.token_head[:, 1:] == model.head_index(policy.modality))  # (2S, T-1)
    count, length = codes.shape
    logits = model.logits(policy.modality, hidden[:, :-1][predicts]).float().view(2 * count, length, -1)  # (2S, N, V)
    scales = policy.guidance.scales(length, logits.device)[None, :, None]  # the scale each code was drawn with
    guided = guided_logits(logits[:count], logits[count:], scales) / policy.temperature
    log_softmax = guided.log_softmax(dim=-1)
    chosen = log_softmax.gather(-1, codes[..., None]).squeeze(-1)  # (S, N)
    entropy = -(log_softmax.exp() * log_softmax).sum(dim=-1)
    return CodeScores(chosen, entropy)
