"""On a converted transformers Janus (grouped-query attention, Janus adapters and heads),
`Pipeline` draws and answers through the engine exactly as the plain loops do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from images.janus.tiny_janus import NUM_IMAGE_TOKENS, sample_image, save_tiny_janus

import modal_core_image_understanding.plugin as understanding_plugin
import modal_core_vq_generation.plugin as generation_plugin
from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.segments import Media
from modal_core.generation.decoding import generate_codes, generate_text
from modal_core.generation.pipeline import Pipeline
from modal_core.plugins import PluginManager
from modal_core_images.janus import from_hf_janus

CAPTION = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    plugins = PluginManager(load_entry_points=False)
    plugins.register(understanding_plugin, name="image_understanding")
    plugins.register(generation_plugin, name="vq_generation")
    root = tmp_path_factory.mktemp("janus")
    save_tiny_janus(root / "hf")
    from_hf_janus(root / "hf", root / "modal", plugins=plugins)
    return Pipeline.load(root / "modal", plugins=plugins)


def test_pipeline_images_are_the_plain_loops_codes(pipeline):
    assert pipeline.model.backbone.config.num_key_value_heads < pipeline.model.backbone.config.num_attention_heads
    images = pipeline.generate([CAPTION, "describe the picture"], n=3, cfg=4.0, temperature=1.0, top_k=40, seed=9)
    samples = [caption_to_image(text, None, "vq_generation") for text in (CAPTION, "describe the picture")]
    codes = generate_codes(pipeline.model, pipeline.collator, samples, "vq_generation", NUM_IMAGE_TOKENS, 3, 4.0, 1.0, 40, None, 9)
    with torch.no_grad():
        expected = pipeline.modalities["vq_generation"].spec.to_output(pipeline.model.encoders["vq_generation"].decode(codes))
    drawn = [np.asarray(image) for row in images for image in row]
    assert len(drawn) == 6 and len({image.tobytes() for image in drawn}) == 6  # six different images
    assert all(np.array_equal(mine, np.asarray(theirs)) for mine, theirs in zip(drawn, expected))


def test_pipeline_answers_are_the_plain_loops_tokens(pipeline):
    answer = pipeline.answer("what colour is the circle?", image=sample_image(), max_new_tokens=12, temperature=0.8, seed=2)
    sample = question_answer("what colour is the circle?", None, [Media("image_understanding", sample_image())])
    eos = pipeline.tokenizer.eos_token_id
    [ids] = generate_text(pipeline.model, pipeline.collator, [sample], 12, 0.8, seed=2, stop_ids=[eos])
    assert answer == pipeline.tokenizer.decode(ids, skip_special_tokens=True).strip()
    assert len(ids) > 3
