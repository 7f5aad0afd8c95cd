"""Random transformers Janus folders, built from a config with no download.

`save_random_janus(SIZES["tiny"], out)` writes what the Hugging Face Hub ships for
Janus-Pro (config.json, generation_config.json, safetensors shards, a byte-level BPE
tokenizer with DeepSeek's special-token names, and a `JanusProcessor`), filled with
random weights. It is a stand-in for trying `modal-core convert --from hf-janus`,
`export` and round trips offline, and the reference the Janus conversion tests and benchmarks
compare modal-core against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import processors
from transformers import (
    JanusConfig,
    JanusForConditionalGeneration,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from modal_core.data.chat import ASSISTANT, USER
from modal_core.data.text_tokenizer import train_byte_level_bpe
from modal_core.errors import CheckpointError
from modal_core_images.janus.hf_janus import janus_generation_config
from modal_core_images.janus.tokenizer_files import IMAGE_TOKENS, janus_processor

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
PATCH = 8  # understanding patch size: grid * PATCH pixels per side
TOKENIZER_VOCAB = 240  # what the BPE learns; the model's `vocab` may be larger (unused rows)
CORPUS = ["a red circle left of a blue square", "what colour is the circle? it is red", "describe the picture in detail"] * 30


@dataclass(frozen=True)
class JanusSize:
    """Sizes of a random Janus: the Llama backbone, the image grid and the codebook.

    The understanding tower is a small SigLIP-style ViT (width 32, 4 heads) whatever
    the size; `vq_channel_multiplier` has one entry per VQ resolution level, so the VQ
    model downsamples by 2 ** (len - 1)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    grid: int  # image tokens per side: grid**2 tokens per image
    codebook: int
    vision_layers: int = 1
    vq_channel_multiplier: tuple[int, ...] = (1, 1, 1, 1, 1)  # 16x downsampling: grid * 16 pixels per side
    max_positions: int = 4096
    tied: bool = False  # LM head shares the token embeddings

    @property
    def image_size(self) -> int:
        """Pixels per side of an understanding image."""
        return self.grid * PATCH


SIZES = {
    # 64 image tokens, hidden 64: per-step cost is almost all framework overhead.
    "tiny": JanusSize(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512, grid=8, codebook=256),
    # 256 image tokens, hidden 512, 8 layers (~40M parameters): a model a CPU decodes in seconds.
    "small": JanusSize(hidden=512, layers=8, heads=8, kv_heads=8, intermediate=1408, vocab=8192, grid=16, codebook=4096),
    # Janus-1.3B / Janus-Pro-1B backbone and generation head, 576 image tokens (for a GPU).
    "janus-1b": JanusSize(hidden=2048, layers=24, heads=16, kv_heads=16, intermediate=5632, vocab=102400, grid=24, codebook=16384),
}
"""Named sizes for `save_random_janus`."""


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE that, like DeepSeek's, adds BOS itself and pads on the left."""
    backend = train_byte_level_bpe(CORPUS, TOKENIZER_VOCAB, [BOS, EOS, PAD, USER, ASSISTANT, *IMAGE_TOKENS.values()])
    backend.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, backend.token_to_id(BOS))])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, extra_special_tokens=IMAGE_TOKENS, padding_side="left"
    )


def random_janus_config(size: JanusSize, tokenizer: PreTrainedTokenizerFast) -> JanusConfig:
    """The transformers `JanusConfig` of `size`, with `tokenizer`'s special-token ids."""
    text = LlamaConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        max_position_embeddings=size.max_positions,
        tie_word_embeddings=size.tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = JanusVisionConfig(
        hidden_size=32,
        num_hidden_layers=size.vision_layers,
        num_attention_heads=4,
        image_size=size.image_size,
        patch_size=PATCH,
        mlp_ratio=2.0,
        projection_dim=size.hidden,
        depth=2,
        num_image_tokens=size.grid**2,
    )
    vq = JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=size.codebook,
        base_channels=32,
        channel_multiplier=list(size.vq_channel_multiplier),
        num_res_blocks=1,
        latent_channels=32,
        projection_dim=size.hidden,
        image_token_embed_dim=size.hidden,
        num_hidden_layers=2,
    )
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS["image_token"])
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=image_token, tie_word_embeddings=size.tied)


def save_random_janus(size: JanusSize | str, out_dir: str | Path, seed: int = 0, max_shard_size: str | int = "5GB") -> Path:
    """Write a random `JanusForConditionalGeneration` of `size` (a `JanusSize` or a name
    in `SIZES`) to `out_dir`, loadable with `from_pretrained` and convertible with
    `from_hf_janus`; the same `seed` gives the same weights. Returns `out_dir`.

    Norm weights and biases are perturbed away from ones and zeros, so a conversion
    that swaps or drops one of them changes the outputs."""
    if isinstance(size, str) and size not in SIZES:
        raise CheckpointError(f"unknown random Janus size {size!r}; expected one of {sorted(SIZES)} or a JanusSize")
    shape = SIZES[size] if isinstance(size, str) else size
    out_dir = Path(out_dir)
    tokenizer = byte_level_tokenizer()
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random stream alone
        torch.manual_seed(seed)
        model = JanusForConditionalGeneration(random_janus_config(shape, tokenizer)).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() == 1:
                    parameter.add_(0.1 * torch.randn_like(parameter))
    model.generation_config = janus_generation_config(tokenizer, do_sample=False)
    model.save_pretrained(str(out_dir), max_shard_size=max_shard_size)
    processor = janus_processor(tokenizer, shape.image_size, shape.grid**2, system_prompt=True)
    processor.save_pretrained(str(out_dir))
    return out_dir
