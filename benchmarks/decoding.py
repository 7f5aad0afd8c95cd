"""KV-cached CFG image decoding against full recomputation, same model, same run.

Prints images/s for both and their ratio. The reference recomputes the whole sequence
(conditional and unconditional rows) at every step: what decoding costs without a cache.
Run: `python benchmarks/decoding.py` (or `make bench`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from omegaconf import OmegaConf

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.schema import Recipe
from modal_core.data.chat import caption_to_image
from modal_core.data.collator import Collator
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.generation.decoding import generate_codes
from modal_core.generation.sampling import guided_logits
from modal_core.plugins import get_plugin_manager

SIZES = {
    "tiny": {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4, "num_attention_heads": 4},
    "small": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8},
}


def build(size: str, image_size: int, patch: int):
    plugins = get_plugin_manager()
    vq = {
        "architecture": "compact",
        "image_size": image_size,
        "codebook_size": 1024,
        "base_channels": 32,
        "latent_channels": 32,
        "channel_multiplier": [1, 1, 1, 1, 1],
    }
    recipe = OmegaConf.merge(
        OmegaConf.structured(Recipe),
        {
            "output_dir": "unused",
            "backbone": {"model_type": "llama", "config": {**SIZES[size], "max_position_embeddings": 1024}},
            "modalities": {"vq_generation": vq},
        },
    )
    tokenizer = train_tokenizer(["a red circle left of a blue square"] * 50, 300, special_tokens_of(recipe, plugins))
    built = assemble(recipe, plugins, tokenizer)
    built.model.eval()
    return built, Collator(tokenizer, built.modalities, max_length=1024, padding_side="left")


@torch.no_grad()
def recompute_codes(model, collator, prompts, positions: int, cfg: float) -> torch.Tensor:
    """Greedy CFG decoding with no cache: every step runs the full sequence again."""
    batch = collator.left_padded(prompts + [replace(p, drop_condition=True) for p in prompts])
    embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
    mask, count = batch.attention_mask, len(prompts)
    codes = torch.empty((count, positions), dtype=torch.long)
    for index in range(positions):
        positions_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = model.transformer(embeds, mask, positions_ids).hidden[:, -1]
        logits = model.logits("vq_generation", hidden)
        codes[:, index] = guided_logits(logits[:count], logits[count:], cfg).argmax(-1)
        step = model.embed_codes("vq_generation", codes[:, index].repeat(2))[:, None]
        embeds = torch.cat([embeds, step], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return codes


def timed(function, repeats: int) -> tuple[float, torch.Tensor]:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        result = function()
    return (time.perf_counter() - start) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=sorted(SIZES))
    parser.add_argument("--image-size", type=int, default=128, help="pixels; 16x downsampling gives (size/16)^2 codes")
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{'model':6} {'images':>6} {'codes':>5} {'cached img/s':>12} {'recompute img/s':>15} {'ratio':>6}  same codes")
    for size in args.sizes:
        built, collator = build(size, args.image_size, 16)
        positions = built.modalities["vq_generation"].num_positions
        for parallel in args.parallel:
            prompts = [caption_to_image("a red circle left of a blue square", None, "vq_generation")] * parallel
            cached_s, cached = timed(
                lambda: generate_codes(
                    built.model, collator, prompts[:1], "vq_generation", positions, parallel, cfg_scale=5.0, temperature=0.0
                ),
                args.repeats,
            )
            plain_s, plain = timed(lambda: recompute_codes(built.model, collator, prompts, positions, 5.0), args.repeats)
            print(
                f"{size:6} {parallel:6d} {positions:5d} {parallel / cached_s:12.2f} {parallel / plain_s:15.2f} "
                f"{plain_s / cached_s:6.2f}  {torch.equal(cached, plain)}"
            )


if __name__ == "__main__":
    main()
