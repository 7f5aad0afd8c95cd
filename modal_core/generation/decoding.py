"""KV-cached decoding loops over a `UnifiedModel`.

Both loops prefill the prompt once, then feed one position per step with the cache.
Image generation runs the conditional and unconditional prompts as one doubled batch
(conditional rows first) and mixes their logits with classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from modal_core.data.collator import Batch, Collator
from modal_core.data.segments import Sample
from modal_core.errors import ModelInputError
from modal_core.generation.sampling import Guidance, guided_logits, sample_tokens
from modal_core.generation.settings import check_sampling
from modal_core.model.unified import UnifiedModel


class _CachedDecoder:
    """Holds the KV cache, attention mask and positions of a batch being decoded."""

    def __init__(self, model: UnifiedModel, batch: Batch) -> None:
        self.model = model
        embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
        self.attention_mask = batch.attention_mask
        self.next_position = batch.position_ids[:, -1:] + 1
        output = model.transformer(embeds, batch.attention_mask, batch.position_ids, use_cache=True)
        self.cache = output.cache
        self.hidden = output.hidden[:, -1]  # (B, hidden)

    def step(self, embeds: torch.Tensor) -> torch.Tensor:
        """Feed one position (B, hidden) per row; returns its hidden state (B, hidden)."""
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        output = self.model.transformer(
            embeds[:, None], self.attention_mask, self.next_position, past_key_values=self.cache, use_cache=True
        )
        self.cache = output.cache
        self.next_position = self.next_position + 1
        self.hidden = output.hidden[:, -1]
        return self.hidden


def check_context(model: UnifiedModel, batch: Batch, new_tokens: int) -> None:
    """Reject a prompt whose length plus `new_tokens` exceeds the backbone's context."""
    context = getattr(model.backbone.config, "max_position_embeddings", None)
    prompt = batch.input_ids.shape[1]
    if context is not None and prompt + new_tokens > context:
        raise ModelInputError(
            f"the prompt ({prompt} tokens) plus {new_tokens} new tokens exceeds the model's context of {context} positions; "
            "shorten the prompt or ask for fewer tokens"
        )


def image_prompt_batch(
    model: UnifiedModel,
    collator: Collator,
    prompts: Sequence[Sample],
    num_positions: int,
    images_per_prompt: int,
    guidance: Guidance,
    sampling: tuple[float, int | None, float | None],
) -> tuple[int, Batch]:
    """Validate image-generation settings and lay out the doubled CFG batch:
    (rows n = prompts x images_per_prompt, batch of n conditional then n unconditional rows)."""
    check_sampling(*sampling)
    guidance.check()
    if images_per_prompt < 1:
        raise ModelInputError(f"need images_per_prompt >= 1, got {images_per_prompt}")
    rows = [prompt for prompt in prompts for _ in range(images_per_prompt)]
    batch = collator.left_padded(rows + [replace(prompt, drop_condition=True) for prompt in rows])
    check_context(model, batch, num_positions)
    return len(rows), batch


def text_prompt_batch(
    model: UnifiedModel,
    collator: Collator,
    prompts: Sequence[Sample],
    max_new_tokens: int,
    sampling: tuple[float, int | None, float | None],
) -> Batch:
    """Validate answering settings and lay out the left-padded prompt batch."""
    check_sampling(*sampling)
    if max_new_tokens < 1:
        raise ModelInputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    batch = collator.left_padded(list(prompts))
    check_context(model, batch, max_new_tokens)
    return batch


def cut_at_stops(tokens: torch.Tensor, stop_ids: Sequence[int]) -> list[list[int]]:
    """Each row of `tokens` (B, T) as a list, cut before its first stop token."""
    stop_set = set(stop_ids)
    results = []
    for row in tokens.tolist():
        cut = next((i for i, token in enumerate(row) if token in stop_set), len(row))
        results.append(row[:cut])
    return results


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on `device` seeded with `seed`, or None (the global RNG) for no seed."""
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def generate_codes(
    model: UnifiedModel,
    collator: Collator,
    prompts: Sequence[Sample],
    modality: str,
    num_positions: int,
    images_per_prompt: int = 1,
    cfg_scale: float = 5.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = 0,
    cfg_schedule: str = "constant",
    cfg_plausibility: float | None = None,
) -> torch.Tensor:
    """Codes (len(prompts) * images_per_prompt, N) of an output modality, row r
    belonging to prompt r // images_per_prompt. Each prompt must end where the item
    begins (a `Media(modality, None)` segment). `cfg_schedule` and `cfg_plausibility`:
    see `Guidance`."""
    guidance = Guidance(cfg_scale, cfg_schedule, cfg_plausibility)
    count, batch = image_prompt_batch(model, collator, prompts, num_positions, images_per_prompt, guidance, (temperature, top_k, top_p))
    device = next(model.parameters()).device
    scales = guidance.scales(num_positions, device)
    decoder = _CachedDecoder(model, batch.to(device))
    generator = seeded_generator(seed, device)
    codes = torch.empty((count, num_positions), dtype=torch.long, device=device)
    hidden = decoder.hidden
    for index in range(num_positions):
        logits = model.logits(modality, hidden)
        mixed = guided_logits(logits[:count], logits[count:], scales[index], cfg_plausibility)
        codes[:, index] = sample_tokens(mixed, temperature, top_k, top_p, generator)
        if index + 1 < num_positions:
            hidden = decoder.step(model.embed_codes(modality, codes[:, index].repeat(2)))
    return codes


@torch.no_grad()
def generate_text(
    model: UnifiedModel,
    collator: Collator,
    prompts: Sequence[Sample],
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = 0,
    stop_ids: Sequence[int] = (),
) -> list[list[int]]:
    """New text token ids for each prompt, cut at the first stop token (excluded)."""
    batch = text_prompt_batch(model, collator, prompts, max_new_tokens, (temperature, top_k, top_p))
    device = next(model.parameters()).device
    decoder = _CachedDecoder(model, batch.to(device))
    generator = seeded_generator(seed, device)
    stops = torch.tensor(list(stop_ids), device=device)
    embedding = model.backbone.get_input_embeddings()
    tokens = torch.empty((len(prompts), max_new_tokens), dtype=torch.long, device=device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    produced = 0
    hidden = decoder.hidden
    for index in range(max_new_tokens):
        next_tokens = sample_tokens(model.logits("text", hidden), temperature, top_k, top_p, generator)
        tokens[:, index] = next_tokens
        produced = index + 1
        finished |= torch.isin(next_tokens, stops)
        if bool(finished.all()) or index + 1 == max_new_tokens:
            break
        hidden = decoder.step(embedding(next_tokens))
    return cut_at_stops(tokens[:, :produced], stop_ids)
