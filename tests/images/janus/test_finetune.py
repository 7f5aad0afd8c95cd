"""Fine-tuning a converted Janus end to end, fully (stage 3) and with LoRA: `init_from`
the converted checkpoint, tiny local data, loss falls, only the trainable groups move,
and the hf-janus export loads in transformers with the fine-tuned model's logits."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import JanusForConditionalGeneration, JanusProcessor

from modal_core.config.loader import load_recipe
from modal_core.generation.pipeline import Pipeline
from modal_core.model.lora import merge_lora
from modal_core.training.run import train
from modal_core_images.janus import to_hf_janus

from .sft_data import QUESTION, data_loss, stage3_recipe, understanding_logits, write_sft_data
from .tiny_janus import sample_image

STEPS = 10
OFFICIAL_PROMPT = f"<|User|>: <image_placeholder>\n{QUESTION}\n\n<|Assistant|>:"


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    return write_sft_data(tmp_path_factory.mktemp("sft"))


def _changed(before: dict, after: dict, group: str) -> bool:
    return any(not torch.equal(before[key], after[key]) for key in before if key.startswith(group + "."))


def _unchanged(before: dict, after: dict, group: str) -> bool:
    return all(torch.equal(before[key], after[key]) for key in before if key.startswith(group + "."))


def _hf_logits_equal_ours(checkpoint, export_dir, hf_dir, plugins, reference_keys) -> None:
    model, info = JanusForConditionalGeneration.from_pretrained(str(export_dir), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sorted(model.state_dict()) == reference_keys  # a plain Janus: no extra (LoRA) keys
    image = sample_image(5, size=48)
    inputs = JanusProcessor.from_pretrained(str(export_dir))(text=OFFICIAL_PROMPT, images=image, return_tensors="pt")
    with torch.no_grad():
        theirs = model.eval()(**inputs).logits
    ours = understanding_logits(Pipeline.load(checkpoint, plugins=plugins), image)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1e-4


def test_stage3_finetune_of_a_converted_checkpoint_exports_to_transformers(converted, janus_plugins, sft_data, tmp_path):
    reference, hf_dir, checkpoint = converted
    recipe = load_recipe(stage3_recipe(checkpoint, sft_data, tmp_path / "run", STEPS), plugins=janus_plugins)
    assert list(recipe.train) == ["backbone", "adapters", "heads"]  # stage 3: encoders frozen
    result = train(recipe, janus_plugins)
    start, end = (data_loss(Pipeline.load(c, plugins=janus_plugins), sft_data, janus_plugins) for c in (checkpoint, result.checkpoint))
    assert end < 0.7 * start, (start, end)
    before, after = load_file(str(checkpoint / "model.safetensors")), load_file(str(result.checkpoint / "model.safetensors"))
    assert sorted(before) == sorted(after)
    assert _unchanged(before, after, "encoders")
    assert all(_changed(before, after, group) for group in ("backbone", "adapters", "heads"))
    export = to_hf_janus(result.checkpoint, tmp_path / "hf", plugins=janus_plugins)
    _hf_logits_equal_ours(result.checkpoint, export, hf_dir, janus_plugins, sorted(reference.state_dict()))


def test_lora_finetune_keeps_the_base_and_exports_merged(converted, janus_plugins, sft_data, tmp_path):
    reference, hf_dir, checkpoint = converted
    path = stage3_recipe(checkpoint, sft_data, tmp_path / "run", STEPS, overlay="stage3-lora", lora={"rank": 4, "alpha": 8.0})
    recipe = load_recipe(path, plugins=janus_plugins)
    assert list(recipe.train) == ["adapters", "heads"] and recipe.lora.dropout > 0  # from the shipped overlay
    result = train(recipe, janus_plugins)
    start, end = (data_loss(Pipeline.load(c, plugins=janus_plugins), sft_data, janus_plugins) for c in (checkpoint, result.checkpoint))
    assert end < 0.9 * start, (start, end)  # fewer parameters move: a slower fall
    before, after = load_file(str(checkpoint / "model.safetensors")), load_file(str(result.checkpoint / "model.safetensors"))
    factors = sorted(key for key in after if key.endswith((".lora_a", ".lora_b")))
    assert len(factors) == 2 * 7 * 2  # 7 projections in each of 2 layers, two factors each
    assert all(after[key].abs().max() > 0 for key in factors if key.endswith(".lora_b"))  # B left zero: it trained
    assert sorted(set(after) - set(factors)) == sorted(before)
    assert _unchanged(before, after, "backbone") and _unchanged(before, after, "encoders")  # the frozen base
    assert _changed(before, after, "adapters") and _changed(before, after, "heads")

    pipeline = Pipeline.load(result.checkpoint, plugins=janus_plugins)
    image = sample_image(6, size=40)
    unmerged = understanding_logits(pipeline, image)
    assert merge_lora(pipeline.model) == 14
    merged = understanding_logits(pipeline, image)
    assert (merged - unmerged).abs().max() <= 1e-5
    assert not torch.equal(unmerged, understanding_logits(Pipeline.load(checkpoint, plugins=janus_plugins), image))

    export = to_hf_janus(result.checkpoint, tmp_path / "hf", plugins=janus_plugins)
    _hf_logits_equal_ours(result.checkpoint, export, hf_dir, janus_plugins, sorted(reference.state_dict()))


def test_frozen_backbone_overlay_trains_only_aligners_and_heads(converted, janus_plugins, sft_data, tmp_path):
    _, _, checkpoint = converted
    path = stage3_recipe(checkpoint, sft_data, tmp_path / "run", 2, overlay="stage3-frozen-backbone")
    result = train(load_recipe(path, plugins=janus_plugins), janus_plugins)
    before, after = load_file(str(checkpoint / "model.safetensors")), load_file(str(result.checkpoint / "model.safetensors"))
    assert _unchanged(before, after, "backbone") and _unchanged(before, after, "encoders")
    assert _changed(before, after, "adapters") and _changed(before, after, "heads")
