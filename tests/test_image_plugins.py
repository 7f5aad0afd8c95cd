"""The built-in image plugins: encoder, adapter and head numbers against hand-computed
references, and both modalities through the unified model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf
from PIL import Image

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.schema import Recipe
from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.collator import Collator
from modal_core.data.segments import Media
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core_images.shapes import render_scene, scene_for_index

TINY_IMAGES = {
    "image_understanding": {"image_size": 32, "patch_size": 8, "width": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
    "vq_generation": {
        "image_size": 32,
        "codebook_size": 64,
        "code_dim": 8,
        "base_channels": 32,
        "channel_multiplier": [1, 1, 2, 2],
        "num_res_blocks": 1,
        "latent_channels": 32,
    },
}


@pytest.fixture
def image_model(image_plugins):
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": TINY_IMAGES})
    tokenizer = train_tokenizer(["a red circle", "what colour is the circle? red"] * 20, 300, special_tokens_of(recipe, image_plugins))
    torch.manual_seed(0)
    built = assemble(recipe, image_plugins, tokenizer)
    return built, Collator(tokenizer, built.modalities, max_length=96)


def _image(index: int) -> Image.Image:
    return render_scene(scene_for_index(index, 0, "train", image_size=32))


def test_understanding_encoder_and_adapter_match_manual_computation(image_model):
    built, _ = image_model
    encoder, adapter = built.model.encoders["image_understanding"], built.model.adapters["image_understanding"]
    pixels = built.modalities["image_understanding"].processor(_image(0))[None]
    assert pixels.shape == (1, 3, 32, 32) and pixels.min() >= -1 and pixels.max() <= 1
    features = encoder.encode(pixels)
    assert features.shape == (1, 16, 32)  # (32 / 8)^2 patches of width 32
    torch.testing.assert_close(features, encoder.vision(pixel_values=pixels).last_hidden_state)
    manual = F.linear(
        F.gelu(F.linear(features, adapter.fc1.weight, adapter.fc1.bias)), adapter.hidden_layers[0].weight, adapter.hidden_layers[0].bias
    )
    torch.testing.assert_close(adapter(features), manual)
    assert adapter(features).shape == (1, 16, built.model.hidden_size)


def test_generation_adapter_and_head_match_manual_computation(image_model):
    built, _ = image_model
    adapter, head = built.model.adapters["vq_generation"], built.model.heads["vq_generation"]
    codes = torch.tensor([[0, 5, 63, 7]])
    vectors = adapter.embedding.weight[codes]
    manual = F.linear(
        F.gelu(F.linear(vectors, adapter.aligner.fc1.weight, adapter.aligner.fc1.bias)), *adapter.aligner.hidden_layers[0].parameters()
    )
    torch.testing.assert_close(adapter(codes), manual)
    hidden = torch.randn(3, built.model.hidden_size)
    logits = head(hidden)
    assert logits.shape == (3, 64)
    torch.testing.assert_close(logits, F.linear(F.gelu(F.linear(hidden, *head.proj_out.parameters())), *head.vision_head.parameters()))


def test_both_image_modalities_train_through_the_unified_model(image_model):
    built, collator = image_model
    model = built.model
    model.set_trainable(["backbone", "adapters", "heads"])
    samples = [
        question_answer("what colour is the circle?", "red", [Media("image_understanding", _image(1))]),
        caption_to_image("a red circle", Media("vq_generation", _image(2), supervised=True), "vq_generation"),
    ]
    batch = collator(samples)
    assert int(batch.media["image_understanding"].mask.sum()) == 16
    assert int(batch.media["vq_generation"].mask.sum()) == 16
    output = model(**batch.model_inputs())
    assert int(output.head_counts["vq_generation"]) == 16  # every code is a target of the image head
    codes = model.encoders["vq_generation"].encode(batch.media["vq_generation"].payload)
    _, token_ids = model.embed(batch.input_ids, batch.token_ids, batch.media)
    assert token_ids[batch.media["vq_generation"].mask].tolist() == codes.flatten().tolist()
    output.loss.backward()
    for group in ("adapters.image_understanding", "adapters.vq_generation", "heads.vq_generation", "backbone"):
        grads = [p.grad for p in model.parameter_groups()[group].parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), group
    assert all(p.grad is None for p in model.encoders.parameters())  # frozen encoders


def test_generated_codes_decode_to_images(image_model):
    built, collator = image_model
    from modal_core.generation.decoding import generate_codes

    prompt = caption_to_image("a red circle", None, "vq_generation")
    codes = generate_codes(built.model, collator, [prompt], "vq_generation", 16, images_per_prompt=2, seed=0)
    assert codes.shape == (2, 16) and codes.min() >= 0 and codes.max() < 64
    pixels = built.model.encoders["vq_generation"].decode(codes)
    images = built.modalities["vq_generation"].spec.to_output(pixels)
    assert [image.size for image in images] == [(32, 32), (32, 32)]
