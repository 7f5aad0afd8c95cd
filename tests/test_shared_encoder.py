"""The shared-encoder arm: the generation VQ tokenizer read by the understanding path
(`vq_understanding`), its feature counts and placeholder masks, and that both modalities
read the one tokenizer checkpoint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf
from test_image_plugins import TINY_IMAGES

from modal_core.assemble import assemble, special_tokens_of
from modal_core.checkpoints.store import save_model_state, write_atomically
from modal_core.config.schema import Recipe
from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.collator import Collator
from modal_core.data.segments import Media
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.errors import RecipeError
from modal_core_images.shapes import render_scene, scene_for_index
from modal_core_vq_generation.plugin import VQGenerationOptions, build_tokenizer

VQ = TINY_IMAGES["vq_generation"]
CODES_PER_IMAGE = 16  # 32 px, 3 halvings: a 4x4 grid


def _shared_model(image_plugins, tmp_path, features: str):
    torch.manual_seed(0)
    tokenizer_dir = tmp_path / "vq"
    state = build_tokenizer(VQGenerationOptions(**VQ)).state_dict()
    write_atomically(tokenizer_dir, lambda folder: save_model_state(state, folder))
    shared = {**VQ, "tokenizer_path": str(tokenizer_dir)}
    modalities = {"vq_generation": shared, "vq_understanding": {**shared, "features": features}}
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": modalities})
    text = train_tokenizer(["a red circle", "what colour is the circle? red"] * 20, 300, special_tokens_of(recipe, image_plugins))
    built = assemble(recipe, image_plugins, text)
    return built, Collator(text, built.modalities, max_length=96)


def _image(index: int):
    return render_scene(scene_for_index(index, 0, "train", image_size=32))


@pytest.mark.parametrize("features", ["quantized", "codes"])
def test_shared_arm_feature_counts_and_masks(image_plugins, tmp_path, features):
    built, collator = _shared_model(image_plugins, tmp_path, features)
    model = built.model
    generation, understanding = model.encoders["vq_generation"], model.encoders["vq_understanding"]
    # One tokenizer: both modalities hold the weights of the same checkpoint.
    for key, value in generation.state_dict().items():
        torch.testing.assert_close(understanding.tokenizer.state_dict()[key], value)
    samples = [
        question_answer("what colour is the circle?", "red", [Media("vq_understanding", _image(1)), Media("vq_understanding", _image(3))]),
        caption_to_image("a red circle", Media("vq_generation", _image(2), supervised=True), "vq_generation"),
    ]
    batch = collator(samples)
    understood, drawn = batch.media["vq_understanding"], batch.media["vq_generation"]
    assert int(understood.mask.sum()) == 2 * CODES_PER_IMAGE and int(understood.mask[0].sum()) == 2 * CODES_PER_IMAGE
    assert int(understood.mask[1].sum()) == 0
    assert int(drawn.mask.sum()) == CODES_PER_IMAGE and int(drawn.mask[1].sum()) == CODES_PER_IMAGE
    assert not bool((understood.mask & drawn.mask).any())

    pixels = understood.payload
    codes = generation.encode(pixels)
    encoded = model.encode("vq_understanding", pixels)
    if features == "quantized":
        expected = F.normalize(generation.vq.quantize.embedding.weight, dim=-1)[codes]
        assert encoded.shape == (2, CODES_PER_IMAGE, VQ["code_dim"])
        torch.testing.assert_close(encoded, expected)
    else:
        assert encoded.dtype == torch.long and torch.equal(encoded, codes)
    assert model.adapters["vq_understanding"](encoded).shape == (2, CODES_PER_IMAGE, model.hidden_size)

    model.set_trainable(["backbone", "adapters", "heads"])
    output = model(**batch.model_inputs())
    # Only the drawn image's codes are image-head targets: the understood ones are inputs.
    assert int(output.head_counts["vq_generation"]) == CODES_PER_IMAGE
    output.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapters["vq_understanding"].parameters())
    assert all(p.grad is None for p in understanding.parameters())


def test_shared_arm_rejects_unknown_features(image_plugins, tmp_path):
    with pytest.raises(RecipeError, match="vq_understanding.features: expected one of quantized, codes, got 'pixels'"):
        _shared_model(image_plugins, tmp_path, "pixels")
