"""Any transformers vision tower as the understanding encoder: SigLIP, CLIP vision and
DINOv2 (by family name and through `auto`), their feature selection, pretrained folders,
and a few training steps of each through the unified model."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf
from PIL import Image
from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.loader import modality_options
from modal_core.config.schema import Recipe
from modal_core.data.chat import question_answer
from modal_core.data.collator import Collator
from modal_core.data.segments import Media
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.errors import RecipeError

UNDERSTANDING = "image_understanding"
SIZES = {"image_size": 32, "patch_size": 8, "width": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
TOWERS = {
    "siglip": ({"type": "siglip"}, "SiglipVisionModel"),
    "clip": ({"type": "clip"}, "CLIPVisionModel"),
    "dinov2": ({"type": "dinov2"}, "Dinov2Model"),
    "auto": (
        {"type": "auto", "config": {"model_type": "dinov2", "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2}},
        "Dinov2Model",
    ),
}


def _recipe(encoder: dict, **extra) -> OmegaConf:
    options = {**SIZES, "encoder": encoder, **extra}
    return OmegaConf.merge(
        OmegaConf.structured(Recipe), {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": {UNDERSTANDING: options}}
    )


def _assembled(recipe, plugins):
    tokenizer = train_tokenizer(["what colour is the circle? red", "a blue square"] * 20, 300, special_tokens_of(recipe, plugins))
    torch.manual_seed(0)
    built = assemble(recipe, plugins, tokenizer)
    return built, Collator(tokenizer, built.modalities, max_length=96)


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_each_tower_family_trains_a_few_steps_through_the_unified_model(family, image_plugins):
    encoder_options, tower_class = TOWERS[family]
    built, collator = _assembled(_recipe(encoder_options), image_plugins)
    encoder = built.model.encoders[UNDERSTANDING]
    assert type(encoder.vision).__name__ == tower_class
    width = encoder.vision.config.hidden_size
    assert built.model.adapters[UNDERSTANDING].fc1.in_features == width  # the adapter follows the tower (auto: 24)
    images = [Image.effect_noise((32, 32), 40 + 20 * i).convert("RGB") for i in range(2)]
    samples = [
        question_answer("what colour is the circle?", answer, [Media(UNDERSTANDING, im)]) for answer, im in zip(("red", "blue"), images)
    ]
    batch = collator(samples)
    assert encoder.encode(batch.media[UNDERSTANDING].payload).shape == (2, 16, width)
    model = built.model
    model.set_trainable(["backbone", "encoders", "adapters"])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = model(**batch.model_inputs()).loss
        loss.backward()
        if not losses:
            grads = [p.grad for p in encoder.parameters() if p.grad is not None]
            assert grads and sum(float(g.abs().sum()) for g in grads) > 0  # the tower is trained through the answer
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_cls_and_feature_layer_select_what_the_tower_computes(image_plugins):
    recipe = _recipe({"type": "clip", "feature_layer": -2, "select": "cls+patch"})
    spec = image_plugins.modality(UNDERSTANDING)
    options = modality_options(recipe, image_plugins, UNDERSTANDING)
    assert spec.num_positions(options) == 17
    torch.manual_seed(0)
    encoder = spec.build_encoder(options)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    states = encoder.vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # (2, 1 + 16, width)
    torch.testing.assert_close(encoder.encode(pixels), states)
    patch_only = spec.build_encoder(modality_options(_recipe({"type": "clip", "feature_layer": -2}), image_plugins, UNDERSTANDING))
    patch_only.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(patch_only.encode(pixels), states[:, 1:])


def test_register_tokens_are_dropped(image_plugins):
    tower = {
        "model_type": "dinov2_with_registers",
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_register_tokens": 2,
    }
    options = modality_options(_recipe({"type": "auto", "select": "cls+patch", "config": tower}), image_plugins, UNDERSTANDING)
    torch.manual_seed(0)
    encoder = image_plugins.modality(UNDERSTANDING).build_encoder(options)
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    states = encoder.vision(pixel_values=pixels).last_hidden_state  # CLS, 2 registers, 16 patches
    assert states.shape[1] == 19
    torch.testing.assert_close(encoder.encode(pixels), torch.cat([states[:, :1], states[:, 3:]], dim=1))


def test_siglip_has_no_cls_to_keep(image_plugins):
    options = modality_options(_recipe({"type": "siglip", "select": "cls+patch"}), image_plugins, UNDERSTANDING)
    encoder = image_plugins.modality(UNDERSTANDING).build_encoder(options)
    with pytest.raises(RecipeError, match="cls\\+patch, but SiglipVisionModel has no CLS token"):
        encoder.encode(torch.zeros(1, 3, 32, 32))


def test_a_pretrained_two_tower_folder_gives_its_vision_half(tmp_path, image_plugins):
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 8,
    }
    text = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 50}
    torch.manual_seed(1)
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text)).save_pretrained(tmp_path / "clip")
    full = CLIPModel.from_pretrained(tmp_path / "clip")
    options = modality_options(_recipe({"type": "clip", "path": str(tmp_path / "clip")}), image_plugins, UNDERSTANDING)
    encoder = image_plugins.modality(UNDERSTANDING).build_encoder(options)
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(encoder.encode(pixels), full.vision_model(pixel_values=pixels).last_hidden_state[:, 1:])


def test_a_pretrained_folder_other_than_the_recipe_says_what_to_set(tmp_path, image_plugins):
    Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=8, mlp_ratio=2)
    ).save_pretrained(tmp_path / "dino")
    options = modality_options(_recipe({"type": "dinov2", "path": str(tmp_path / "dino")}), image_plugins, UNDERSTANDING)
    with pytest.raises(RecipeError, match=r"dino has \{'num_hidden_layers': 3\}; set these values in the recipe"):
        image_plugins.modality(UNDERSTANDING).build_encoder(options)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        ({"type": "vit-huge"}, "encoder.type: expected one of siglip, clip, dinov2, auto, janus, got 'vit-huge'"),
        ({"type": "auto"}, "type auto needs a path or config.model_type"),
        ({"select": "cls"}, "encoder.select: expected one of patch, cls\\+patch, got 'cls'"),
    ],
)
def test_bad_encoder_options_are_named(encoder, message, image_plugins):
    options = modality_options(_recipe(encoder), image_plugins, UNDERSTANDING)
    with pytest.raises(RecipeError, match=message):
        image_plugins.modality(UNDERSTANDING).build_encoder(options)
