"""`init_from` a converted checkpoint: the training start-up builds the model on the
meta device and adopts the checkpoint's tensors (one copy in memory); afterwards every
weight equals the checkpoint's, ties survive, and fresh LoRA factors change nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from modal_core.assemble import assemble
from modal_core.checkpoints.store import resolve_checkpoint
from modal_core.config.loader import load_recipe, recipe_to_dict
from modal_core.data.chat import ChatFormat
from modal_core.data.collator import Collator
from modal_core.generation.pipeline import Pipeline
from modal_core.model.lora import lora_layers
from modal_core.training.run import _unified_task
from modal_core_images.janus import from_hf_janus

from .sft_data import stage3_recipe, understanding_logits, write_sft_data
from .tiny_janus import sample_image, save_tiny_janus


def _start(recipe_path, plugins):
    recipe = load_recipe(recipe_path, plugins=plugins)
    start = resolve_checkpoint(recipe.init_from)
    module, *_ = _unified_task(recipe, plugins, recipe_to_dict(recipe.optim), recipe.trainer.max_steps, start, Path(recipe.output_dir))
    return recipe, module.model


def test_training_start_up_adopts_the_checkpoint_weights(converted, janus_plugins, tmp_path):
    _, _, checkpoint = converted
    data = write_sft_data(tmp_path / "data")
    _, model = _start(stage3_recipe(checkpoint, data, tmp_path / "run", 1), janus_plugins)
    saved, state = load_file(str(checkpoint / "model.safetensors")), model.state_dict()
    assert sorted(state) == sorted(saved)
    assert all(torch.equal(state[key], saved[key]) for key in saved)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        name for name, _ in model.named_parameters() if not name.startswith("encoders.")
    }


def test_tied_bfloat16_checkpoint_stays_tied_and_trains_in_float32(janus_plugins, tmp_path):
    save_tiny_janus(tmp_path / "hf", seed=1, tied=True)
    checkpoint = from_hf_janus(tmp_path / "hf", tmp_path / "modal", dtype="bfloat16", plugins=janus_plugins)
    data = write_sft_data(tmp_path / "data")
    _, model = _start(stage3_recipe(checkpoint, data, tmp_path / "run", 1), janus_plugins)
    backbone = model.backbone
    assert backbone.get_output_embeddings().weight is backbone.get_input_embeddings().weight
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert saved["backbone.model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    state = model.state_dict()
    assert all(state[key].dtype == torch.float32 and torch.equal(state[key], saved[key].float()) for key in saved)


def test_fresh_lora_factors_leave_the_logits_unchanged(converted, janus_plugins, tmp_path):
    _, _, checkpoint = converted
    path = stage3_recipe(checkpoint, tmp_path, tmp_path / "run", 1, lora={"rank": 2, "alpha": 4.0, "targets": ["q_proj", "down_proj"]})
    recipe = load_recipe(path, plugins=janus_plugins)
    tokenizer = Pipeline.load(checkpoint, plugins=janus_plugins).tokenizer
    assembled = assemble(recipe, janus_plugins, tokenizer, init_from=checkpoint)
    layers = lora_layers(assembled.model)
    assert len(layers) == 4 and sorted(assembled.fresh) == sorted(f"{name}.{f}" for name in layers for f in ("lora_a", "lora_b"))
    assert all(layer.lora_a.abs().max() > 0 and not layer.lora_b.any() for layer in layers.values())
    collator = Collator(tokenizer, assembled.modalities, max_length=256, chat=ChatFormat(**recipe_to_dict(recipe.chat)))
    with_lora = understanding_logits(Pipeline(replace(assembled, collator=collator)), sample_image(2))
    base = understanding_logits(Pipeline.load(checkpoint, plugins=janus_plugins), sample_image(2))
    assert torch.equal(with_lora, base)
