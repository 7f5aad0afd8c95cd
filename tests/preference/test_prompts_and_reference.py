"""Prompts of a preference-tuning batch, the quickstart's held-out-safe prompt set, and
the LoRA reference (the base weights, adapters off)."""

from __future__ import annotations

import torch
from torch import nn

from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.segments import Media
from modal_core.model.lora import LoRALinear, lora_disabled
from modal_core.preference.batches import PromptCollator, caption_of
from modal_core_images.datasets import shapes_prompts
from modal_core_images.evaluation.shapes_checker import parse_caption
from modal_core_images.evaluation.shapes_geneval import mini_prompts


class RecordingCollator:
    def __call__(self, samples):
        return list(samples)


def test_generation_samples_become_prompts_and_the_others_a_supervised_batch():
    drawn = caption_to_image("a red circle", Media("vq_generation", "image.png", supervised=True), "vq_generation")
    asked = question_answer("what colour is the circle?", "red", [Media("image_understanding", "image.png")])
    assert caption_of(drawn, "vq_generation") == "a red circle"
    assert caption_of(asked, "vq_generation") is None
    assert caption_of(drawn, "another_output") is None
    batch = PromptCollator(RecordingCollator(), "vq_generation")([drawn, asked, caption_to_image("a blue cross", None, "vq_generation")])
    assert batch.prompts == ["a red circle", "a blue cross"]
    assert batch.supervised == [asked]


def test_shapes_prompts_never_hold_a_prompt_the_suite_asks():
    prompts = shapes_prompts({"size": 300}, 0, "train")
    captions = [caption_of(prompts[index], "vq_generation") for index in range(len(prompts))]
    asked = {prompt["prompt"] for prompt in mini_prompts()}
    assert len(captions) == 300 and not set(captions) & asked
    assert all(len(set(parse_caption(text))) == 2 for text in captions)  # two different objects each


def test_the_lora_reference_computes_the_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(4, 3)
    expected = base(torch.ones(2, 4)).detach()
    layer = LoRALinear(base, rank=2, alpha=4.0, dropout=0.0)
    with torch.no_grad():
        layer.lora_b.fill_(0.5)
    inputs = torch.ones(2, 4)
    tuned = layer(inputs).detach()
    assert not torch.allclose(tuned, expected)
    with lora_disabled(layer):
        torch.testing.assert_close(layer(inputs), expected)
    torch.testing.assert_close(layer(inputs), tuned)  # the adapters are back on
