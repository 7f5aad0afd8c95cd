"""Random transformers Janus models built from config (no downloads) and the same
weights converted to modal-core, for benchmarks that compare the two.

`SIZES` names the configurations; `janus_pair(size, root)` saves a random
`JanusForConditionalGeneration` with a small byte-level BPE tokenizer to `root/hf`,
converts it with `modal_core.interop.from_hf_janus` to `root/modal` and returns both
models ready for inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
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

from modal_core.generation.pipeline import Pipeline
from modal_core.interop import from_hf_janus
from modal_core.plugins import PluginManager, get_plugin_manager

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE_TOKENS = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
CORPUS = ["a red circle left of a blue square", "what colour is the circle? it is red", "describe the picture in detail"] * 30


@dataclass(frozen=True)
class JanusSize:
    """Sizes of a random Janus: the Llama backbone, the image grid and the codebook."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    grid: int  # image tokens per side: grid**2 tokens per image
    codebook: int


SIZES = {
    # 64 image tokens, hidden 64: per-step cost is almost all framework overhead.
    "tiny": JanusSize(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512, grid=8, codebook=256),
    # 256 image tokens, hidden 512, 8 layers (~40M parameters): a model a CPU decodes in seconds.
    "small": JanusSize(hidden=512, layers=8, heads=8, kv_heads=8, intermediate=1408, vocab=8192, grid=16, codebook=4096),
    # Janus-1.3B / Janus-Pro-1B backbone and generation head, 576 image tokens (for a GPU).
    "janus-1b": JanusSize(hidden=2048, layers=24, heads=16, kv_heads=16, intermediate=5632, vocab=102400, grid=24, codebook=16384),
}


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE that, like DeepSeek's, adds BOS itself and pads on the left."""
    specials = [BOS, EOS, PAD, "<|User|>", "<|Assistant|>", *IMAGE_TOKENS.values()]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, backend.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, extra_special_tokens=IMAGE_TOKENS, padding_side="left"
    )


def janus_config(size: JanusSize, tokenizer: PreTrainedTokenizerFast) -> JanusConfig:
    """A transformers `JanusConfig` of `size` (understanding tower kept small: not benchmarked)."""
    text = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    patch = 8
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=size.grid * patch,
        patch_size=patch,
        mlp_ratio=2.0,
        projection_dim=size.hidden,
        depth=2,
        num_image_tokens=size.grid**2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=size.codebook,
        base_channels=32,
        channel_multiplier=[1, 1, 1, 1, 1],  # 16x downsampling: grid * 16 pixels per side
        num_res_blocks=1,
        latent_channels=32,
        projection_dim=size.hidden,
        image_token_embed_dim=size.hidden,
        num_hidden_layers=2,
    )
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"])
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=image_token)


@dataclass
class JanusPair:
    """The same random weights as a transformers Janus and as a modal-core pipeline."""

    reference: JanusForConditionalGeneration
    processor: JanusProcessor
    pipeline: Pipeline
    image_tokens: int


def janus_pair(
    size: str, root: Path, dtype: torch.dtype = torch.float32, device: str = "cpu", plugins: PluginManager | None = None
) -> JanusPair:
    """Save a random transformers Janus of `SIZES[size]` under `root/hf`, convert it to
    `root/modal` with `from_hf_janus`, and load both on `device` in `dtype`."""
    shape = SIZES[size]
    tokenizer = byte_level_tokenizer()
    torch.manual_seed(0)
    reference = JanusForConditionalGeneration(janus_config(shape, tokenizer)).eval()
    reference.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["boi_token"])},
        guidance_scale=5.0,
        temperature=1.0,
    )
    reference.save_pretrained(str(root / "hf"))
    image_processor = JanusImageProcessorPil(
        size={"height": 16 * shape.grid, "width": 16 * shape.grid}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = JanusProcessor(
        image_processor=image_processor, tokenizer=tokenizer, use_default_system_prompt=True, num_image_tokens=shape.grid**2
    )
    processor.save_pretrained(str(root / "hf"))
    from_hf_janus(root / "hf", root / "modal", plugins=plugins or get_plugin_manager())
    pipeline = Pipeline.load(root / "modal", plugins=plugins or get_plugin_manager(), device=device)
    pipeline.model.to(dtype)
    reference.to(device=device, dtype=dtype)
    return JanusPair(reference, processor, pipeline, shape.grid**2)
