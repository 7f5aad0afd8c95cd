"""A tiny random transformers Janus, saved the way the Hugging Face Hub ships Janus-Pro:
DeepSeek-style special-token names, sharded safetensors, processor and generation
config. It is the reference every interop test compares against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusImageProcessorPil,
    JanusProcessor,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
SPECIALS = [BOS, EOS, PAD, "<|User|>", "<|Assistant|>", *IMAGE_TOKENS.values()]
IMAGE_SIZE, PATCH = 32, 8
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
VOCAB = 320
CORPUS = ["a red circle left of a blue square", "what colour is the circle? it is red", "describe the picture in detail"] * 30


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE that, like DeepSeek's, adds BOS itself."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=240, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, backend.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, extra_special_tokens=IMAGE_TOKENS, padding_side="left"
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast, tied: bool = False) -> JanusConfig:
    text = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        mlp_ratio=2.0,
        projection_dim=64,
        depth=2,
        num_image_tokens=NUM_IMAGE_TOKENS,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=64,
        base_channels=32,
        channel_multiplier=[1, 2],
        num_res_blocks=1,
        latent_channels=32,
        projection_dim=64,
        image_token_embed_dim=64,
        num_hidden_layers=2,
    )
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"])
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=image_token, tie_word_embeddings=tied)


def tiny_processor(tokenizer: PreTrainedTokenizerFast) -> JanusProcessor:
    image_processor = JanusImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return JanusProcessor(
        image_processor=image_processor, tokenizer=tokenizer, use_default_system_prompt=True, num_image_tokens=NUM_IMAGE_TOKENS
    )


def save_tiny_janus(directory: Path, seed: int = 0, tied: bool = False) -> JanusForConditionalGeneration:
    """Build, save (sharded) and return a tiny random Janus in eval mode."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(tiny_config(tokenizer, tied)).eval()
    with torch.no_grad():  # random norms and biases, so a wrong mapping cannot hide behind ones and zeros
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["boi_token"])},
        guidance_scale=5.0,
        temperature=1.0,
    )
    model.save_pretrained(str(directory), max_shard_size="300KB")
    tiny_processor(tokenizer).save_pretrained(str(directory))
    return model


def sample_image(seed: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    """A random RGB image (already the model's size, so both processors only normalise)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
