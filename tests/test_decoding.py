"""Decoding: the KV-cached loops against plain full-sequence recomputation."""

from __future__ import annotations

import pytest
import torch
from test_model import assembled  # noqa: F401  (fixture)

from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.segments import Media
from modal_core.errors import ModelInputError
from modal_core.generation.decoding import generate_codes, generate_text
from modal_core.generation.sampling import guided_logits, sample_tokens


def _full_logits(model, collator, sample, head: str, modality: str | None = None, codes=None):
    """Last-position logits by running the whole sequence again (no cache)."""
    batch = collator.left_padded([sample])
    embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
    if codes is not None and len(codes):
        embeds = torch.cat([embeds, model.embed_codes(modality, torch.tensor([codes]))], dim=1)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    positions = torch.arange(embeds.shape[1])[None]
    hidden = model.transformer(embeds, mask, positions).hidden
    return model.logits(head, hidden[:, -1])


def test_cached_cfg_generation_equals_two_pass_recomputation(assembled):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    prompt = caption_to_image("a red circle", None, "toy_codes")
    scale = 3.0
    codes = generate_codes(model, collator, [prompt], "toy_codes", 4, 1, cfg_scale=scale, temperature=0.0)
    # Reference: greedy decoding where each step recomputes conditional and
    # unconditional logits from scratch and mixes them by hand.
    from dataclasses import replace

    unconditional = replace(prompt, drop_condition=True)
    reference = []
    for _ in range(4):
        cond = _full_logits(model, collator, prompt, "toy_codes", "toy_codes", reference)
        uncond = _full_logits(model, collator, unconditional, "toy_codes", "toy_codes", reference)
        mixed = uncond + scale * (cond - uncond)
        reference.append(int(mixed.argmax()))
    assert codes.tolist() == [reference]


def test_cached_text_decoding_equals_recomputation(assembled):  # noqa: F811
    built, tokenizer, collator = assembled
    model = built.model.eval()
    sample = question_answer("what is it", None, [Media("toy_vector", torch.randn(3, 5))])
    [tokens] = generate_text(model, collator, [sample], max_new_tokens=6)
    batch = collator.left_padded([sample])
    embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
    reference = []
    for _ in range(6):
        extra = model.backbone.get_input_embeddings()(torch.tensor([reference], dtype=torch.long))
        full = torch.cat([embeds, extra], dim=1)
        hidden = model.transformer(full, torch.ones(full.shape[:2], dtype=torch.long), torch.arange(full.shape[1])[None]).hidden
        reference.append(int(model.logits("text", hidden[:, -1]).argmax()))
    assert tokens == reference


def test_batched_left_padded_prompts_match_single_prompts(assembled):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    short = caption_to_image("draw it", None, "toy_codes")
    long = caption_to_image("a red circle what is it draw it", None, "toy_codes")
    together = generate_codes(model, collator, [short, long], "toy_codes", 4, 2, cfg_scale=2.0, temperature=0.0)
    alone = generate_codes(model, collator, [long], "toy_codes", 4, 1, cfg_scale=2.0, temperature=0.0)
    assert together[2].tolist() == alone[0].tolist() == together[3].tolist()


def test_sampling_is_reproducible_per_seed(assembled):  # noqa: F811
    built, _, collator = assembled
    prompt = caption_to_image("a red circle", None, "toy_codes")
    first = generate_codes(built.model, collator, [prompt], "toy_codes", 4, 8, seed=7)
    again = generate_codes(built.model, collator, [prompt], "toy_codes", 4, 8, seed=7)
    other = generate_codes(built.model, collator, [prompt], "toy_codes", 4, 8, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_guidance_and_filters():
    cond, uncond = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[1.0, 0.0, 1.0]])
    assert guided_logits(cond, uncond, 5.0).tolist() == [[1.0, 10.0, -4.0]]
    assert guided_logits(cond, uncond, 1.0).tolist() == cond.tolist()
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0]]).repeat(500, 1)
    generator = torch.Generator().manual_seed(0)
    assert set(sample_tokens(logits, 1.0, top_k=2, generator=generator).tolist()) == {1, 2}
    # top_p: p(1)=0.64, p(2)=0.24 -> 0.8 keeps tokens 1 and 2 only
    assert set(sample_tokens(logits, 1.0, top_p=0.8, generator=generator).tolist()) == {1, 2}
    assert set(sample_tokens(logits, 0.0).tolist()) == {1}
    with pytest.raises(ModelInputError, match="temperature"):
        from modal_core.generation.settings import check_sampling

        check_sampling(-1.0, None, None)


def test_plausibility_excludes_what_the_caption_rules_out_and_guides_the_rest():
    # conditional probabilities 0.665, 0.245, 0.090 (log-softmax of 2, 1, 0); a = 0.3 keeps
    # the first two (0.245 >= 0.3 * 0.665 = 0.1995), drops the third (0.090 < 0.1995)
    cond, uncond = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[2.0, -1.0, -3.0]])
    guided = guided_logits(cond, uncond, 5.0, plausibility=0.3)
    assert guided[0, :2].tolist() == [2.0, 9.0]
    assert guided[0, 2].item() == float("-inf")
    # without the constraint guidance would favour the ruled-out code 2 the most (12 > 9)
    assert guided_logits(cond, uncond, 5.0).argmax().item() == 2
    assert guided_logits(cond, uncond, 5.0, plausibility=1.0)[0].isfinite().tolist() == [True, False, False]


def test_guidance_schedules_and_their_checks():
    from modal_core.generation.sampling import Guidance

    assert Guidance(5.0).scales(4).tolist() == [5.0, 5.0, 5.0, 5.0]
    assert Guidance(5.0, "linear").scales(5).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert Guidance(3.0, "linear").scales(1).tolist() == [3.0]
    with pytest.raises(ModelInputError, match="cfg schedule"):
        Guidance(5.0, "cosine").check()
    with pytest.raises(ModelInputError, match="cfg plausibility"):
        Guidance(5.0, plausibility=0.0).check()
    with pytest.raises(ModelInputError, match="cfg scale"):
        Guidance(-1.0).check()
