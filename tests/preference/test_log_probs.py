"""Preference tuning scores codes under exactly the distribution the sampler drew them
from: teacher-forced guided log-probabilities equal the sampler's, for each guidance schedule."""

from __future__ import annotations

import pytest
import torch
from test_model import assembled  # noqa: F401  (fixture)

from modal_core.data.chat import caption_to_image
from modal_core.generation import decoding
from modal_core.preference.log_probs import GuidedPolicy, guided_code_scores

PROMPTS = ["draw it", "a red circle what is it draw it"]


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_teacher_forced_scores_are_the_log_probabilities_the_sampler_drew_from(assembled, monkeypatch, schedule):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    drawn_from = []
    sample = decoding.sample_tokens

    def recording(logits, temperature, top_k, top_p, generator):
        drawn_from.append((logits.float() / temperature).log_softmax(dim=-1))
        return sample(logits, temperature, top_k, top_p, generator)

    monkeypatch.setattr(decoding, "sample_tokens", recording)
    prompts = [caption_to_image(prompt, None, "toy_codes") for prompt in PROMPTS]
    codes = decoding.generate_codes(model, collator, prompts, "toy_codes", 4, cfg_scale=4.0, temperature=0.8, seed=3, cfg_schedule=schedule)
    expected = torch.stack(drawn_from, dim=1).gather(-1, codes[..., None]).squeeze(-1)  # (S, N)
    with torch.no_grad():
        scores = guided_code_scores(model, collator, PROMPTS, codes, GuidedPolicy("toy_codes", 4.0, 0.8, schedule))
        other = "linear" if schedule == "constant" else "constant"
        mismatched = guided_code_scores(model, collator, PROMPTS, codes, GuidedPolicy("toy_codes", 4.0, 0.8, other))
    assert scores.log_probs.shape == (2, 4)
    torch.testing.assert_close(scores.log_probs, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(mismatched.log_probs, expected, atol=1e-2)  # the schedule matters: the check can fail
