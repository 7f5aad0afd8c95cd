"""A converted transformers Janus answers and draws exactly like transformers does, and
exports back to a folder `from_pretrained` loads with the same weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import JanusForConditionalGeneration, JanusProcessor, LogitsProcessor

from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.segments import Media
from modal_core.generation.decoding import generate_codes
from modal_core.generation.pipeline import Pipeline
from modal_core_images.janus import to_hf_janus
from modal_core_images.janus.keys import modal_to_hf

from .tiny_janus import NUM_IMAGE_TOKENS, sample_image

QUESTION = "what colour is the circle?"
OFFICIAL_PROMPT = f"<|User|>: <image_placeholder>\n{QUESTION}\n\n<|Assistant|>:"  # deepseek-ai/Janus "deepseek" template
CAPTION = "a red circle left of a blue square"


def _understanding_logits(pipeline: Pipeline, image) -> tuple[torch.Tensor, torch.Tensor]:
    batch = pipeline.collator.left_padded([question_answer(QUESTION, None, [Media("image_understanding", image)])])
    with torch.no_grad():
        embeds, _ = pipeline.model.embed(batch.input_ids, batch.token_ids, batch.media)
        hidden = pipeline.model.transformer(embeds, batch.attention_mask, batch.position_ids).hidden
        return batch.input_ids, pipeline.model.logits("text", hidden)


def test_understanding_logits_equal_transformers(converted, janus_plugins):
    reference, hf_dir, checkpoint = converted
    pipeline = Pipeline.load(checkpoint, plugins=janus_plugins)
    image = sample_image()
    inputs = JanusProcessor.from_pretrained(str(hf_dir))(text=OFFICIAL_PROMPT, images=image, return_tensors="pt")
    ids, logits = _understanding_logits(pipeline, image)
    # Same tokens: BOS, Janus's system prompt, roles, 16 image placeholders between begin/end, newline.
    assert torch.equal(ids, inputs["input_ids"])
    assert (ids == reference.config.image_token_id).sum() == NUM_IMAGE_TOKENS
    with torch.no_grad():
        expected = reference(**inputs).logits
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max() <= 1e-4
    assert expected.std() > 0.1  # a real signal, not zeros


class _RecordScores(LogitsProcessor):
    """Keeps the raw (conditional rows, then unconditional rows) image-head logits."""

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.clone())
        return scores


def test_image_generation_equals_transformers_generate(converted, janus_plugins):
    reference, hf_dir, checkpoint = converted
    pipeline = Pipeline.load(checkpoint, plugins=janus_plugins)
    scale, images = 5.0, 2
    processor = JanusProcessor.from_pretrained(str(hf_dir))
    inputs = processor(text=f"<|User|>: {CAPTION}\n\n<|Assistant|>:", generation_mode="image", return_tensors="pt")
    recorder = _RecordScores()
    rows = {key: value.repeat(images, 1) for key, value in inputs.items()}  # greedy search allows one sequence per row
    expected_codes = reference.generate(**rows, generation_mode="image", do_sample=False, guidance_scale=scale, logits_processor=[recorder])
    ours: list[torch.Tensor] = []
    head = pipeline.model.heads["vq_generation"]
    hook = head.register_forward_hook(lambda module, args, output: ours.append(output.clone()))
    try:
        codes = generate_codes(
            pipeline.model,
            pipeline.collator,
            [caption_to_image(CAPTION, None, "vq_generation")],
            "vq_generation",
            NUM_IMAGE_TOKENS,
            images_per_prompt=images,
            cfg_scale=scale,
            temperature=0.0,
        )
    finally:
        hook.remove()
    assert len(ours) == len(recorder.steps) == NUM_IMAGE_TOKENS
    for step, (mine, theirs) in enumerate(zip(ours, recorder.steps)):
        guided = [rows[images:] + scale * (rows[:images] - rows[images:]) for rows in (mine, theirs)]
        assert (guided[0] - guided[1]).abs().max() <= 1e-4, f"step {step}"
    assert torch.equal(codes, expected_codes)
    assert len(set(codes.flatten().tolist())) > 1  # not a constant: the comparison means something
    with torch.no_grad():
        pixels = pipeline.model.encoders["vq_generation"].decode(codes)  # (n, 3, H, W)
        expected_pixels = reference.decode_image_tokens(codes)  # (n, H, W, 3)
    assert (pixels.permute(0, 2, 3, 1) - expected_pixels).abs().max() <= 1e-5


def test_export_round_trip_loads_without_warnings(converted, janus_plugins, tmp_path):
    reference, _, checkpoint = converted
    out = to_hf_janus(checkpoint, tmp_path / "export", max_shard_size="300KB", plugins=janus_plugins)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # written as shards
    model, info = JanusForConditionalGeneration.from_pretrained(str(out), output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    original = reference.state_dict()
    exported = model.state_dict()
    assert sorted(original) == sorted(exported)
    assert all(torch.equal(original[key], exported[key]) for key in original)
    modal = load_file(str(checkpoint / "model.safetensors"))
    assert all(torch.equal(tensor, original[modal_to_hf(key)]) for key, tensor in modal.items())
    processor = JanusProcessor.from_pretrained(str(out))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == OFFICIAL_PROMPT
    inputs = processor(text=OFFICIAL_PROMPT, images=sample_image(), return_tensors="pt")
    with torch.no_grad():
        assert (model.eval()(**inputs).logits - reference(**inputs).logits).abs().max() <= 1e-4
    assert model.generation_config.generation_kwargs["boi_token_id"] == reference.generation_config.generation_kwargs["boi_token_id"]
    assert model.generation_config.pad_token_id == reference.generation_config.pad_token_id


@pytest.mark.parametrize(
    ("understanding", "generation", "message"),
    [
        ("siglip", "janus", r"cannot export to Hugging Face Janus: the understanding encoder .*'siglip'.*`architecture: janus`"),
        ("janus", "compact", r"cannot export to Hugging Face Janus: the VQ tokenizer .*'compact', the quickstart's small conv VQ.*vq16"),
    ],
)
def test_export_names_the_part_a_janus_checkpoint_cannot_hold(understanding, generation, message):
    from omegaconf import OmegaConf
    from transformers import LlamaConfig

    from modal_core.errors import CheckpointError
    from modal_core_images.janus.architecture import janus_config_from_recipe

    recipe = OmegaConf.create(
        {"modalities": {"image_understanding": {"architecture": understanding}, "vq_generation": {"architecture": generation}}}
    )
    with pytest.raises(CheckpointError, match=message):
        janus_config_from_recipe(recipe, LlamaConfig(hidden_size=32), image_token_id=5, source="runs/quickstart/stage3")
