"""The decode engine draws exactly the tokens of the plain KV-cached loops, for both heads."""

from __future__ import annotations

import pytest
import torch
from test_model import assembled  # noqa: F401  (fixture)

from modal_core.data.chat import caption_to_image, question_answer
from modal_core.data.segments import Media
from modal_core.generation import skinny_linear
from modal_core.generation.decoding import generate_codes, generate_text
from modal_core.generation.engine import CAPACITY_ROUNDING, CacheCapacityError, DecodeEngine, draw_tokens
from modal_core.generation.sampling import sample_tokens


def _image_prompts():
    return [caption_to_image("draw it", None, "toy_codes"), caption_to_image("a red circle what is it draw it", None, "toy_codes")]


def _text_prompts():
    features = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    return [
        question_answer("what is it", None, [Media("toy_vector", features)]),
        question_answer("a red circle draw it what is it", None, [Media("toy_vector", -features)]),
    ]


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.0},
        {"temperature": 1.0},
        {"temperature": 0.7, "top_k": 5},
        {"temperature": 1.3, "top_p": 0.8},
        {"temperature": 1.0, "top_k": 7, "top_p": 0.9},
    ],
)
def test_image_codes_equal_the_plain_loop(assembled, sampling):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    args = (collator, _image_prompts(), "toy_codes", 12)
    plain = generate_codes(model, *args, images_per_prompt=3, cfg_scale=3.0, seed=11, **sampling)
    fast = DecodeEngine(model).generate_codes(*args, images_per_prompt=3, cfg_scale=3.0, seed=11, **sampling)
    assert fast.shape == (6, 12)
    assert torch.equal(fast, plain)
    assert len(set(fast.flatten().tolist())) > 3  # codes vary: the comparison can fail


@pytest.mark.parametrize(
    "guidance", [{"cfg_schedule": "linear"}, {"cfg_plausibility": 0.2}, {"cfg_schedule": "linear", "cfg_plausibility": 0.05}]
)
def test_guidance_schedule_and_plausibility_draw_the_plain_loops_codes(assembled, guidance):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    args = (collator, _image_prompts(), "toy_codes", 12)
    plain = generate_codes(model, *args, images_per_prompt=3, cfg_scale=4.0, seed=5, **guidance)
    fast = DecodeEngine(model).generate_codes(*args, images_per_prompt=3, cfg_scale=4.0, seed=5, **guidance)
    assert torch.equal(fast, plain)
    constant = generate_codes(model, *args, images_per_prompt=3, cfg_scale=4.0, seed=5)
    assert not torch.equal(plain, constant)  # the option changes the draw: the comparison can fail


def test_skinny_linears_draw_the_plain_loops_codes_and_tokens(assembled, monkeypatch):  # noqa: F811
    """With every layer of the toy model large enough for `skinny_linear` (the real
    threshold leaves its small layers on `F.linear`), codes and tokens stay the same."""
    built, _, collator = assembled
    model = built.model.eval()
    monkeypatch.setattr(skinny_linear, "MIN_SKINNY_WEIGHT", 0)
    calls = []
    original = skinny_linear.skinny_linear
    monkeypatch.setattr(skinny_linear, "skinny_linear", lambda *args: calls.append(1) or original(*args))
    args = (collator, _image_prompts(), "toy_codes", 12)
    plain = generate_codes(model, *args, images_per_prompt=2, cfg_scale=3.0, temperature=1.0, seed=8)
    assert torch.equal(DecodeEngine(model).generate_codes(*args, images_per_prompt=2, cfg_scale=3.0, temperature=1.0, seed=8), plain)
    assert len(calls) > 11 * len(built.model.backbone.base_model.layers)  # every step went through it
    text = generate_text(model, collator, _text_prompts(), max_new_tokens=20, temperature=1.0, seed=5)
    assert DecodeEngine(model).generate_text(collator, _text_prompts(), max_new_tokens=20, temperature=1.0, seed=5) == text


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 1.0, "top_k": 20, "top_p": 0.95}])
def test_text_tokens_equal_the_plain_loop(assembled, sampling):  # noqa: F811
    built, tokenizer, collator = assembled
    model = built.model.eval()
    free = generate_text(model, collator, _text_prompts(), max_new_tokens=40, seed=3, **sampling)
    assert free == DecodeEngine(model).generate_text(collator, _text_prompts(), max_new_tokens=40, seed=3, **sampling)
    # Stop at a token that occurs in the answers: rows end at different lengths.
    stop = free[0][5]
    plain = generate_text(model, collator, _text_prompts(), max_new_tokens=40, seed=3, stop_ids=[stop], **sampling)
    fast = DecodeEngine(model).generate_text(collator, _text_prompts(), max_new_tokens=40, seed=3, stop_ids=[stop], **sampling)
    assert fast == plain
    assert len(fast[0]) <= 5 and stop not in fast[0]


def test_top_k_one_and_tiny_top_p_reduce_to_greedy(assembled):  # noqa: F811
    built, _, collator = assembled
    engine = DecodeEngine(built.model.eval())
    args = (collator, _image_prompts(), "toy_codes", 10)
    greedy = engine.generate_codes(*args, images_per_prompt=2, temperature=0.0)
    assert torch.equal(engine.generate_codes(*args, images_per_prompt=2, temperature=1.0, top_k=1, seed=5), greedy)
    assert torch.equal(engine.generate_codes(*args, images_per_prompt=2, temperature=1.0, top_p=1e-6, seed=6), greedy)
    sampled = engine.generate_codes(*args, images_per_prompt=2, temperature=1.0, seed=5)
    assert not torch.equal(sampled, greedy)


def test_draw_tokens_is_multinomial_without_host_sync():
    probabilities = torch.randn(8, 300, generator=torch.Generator().manual_seed(0)).mul(3).softmax(-1)
    probabilities[:, :100] = 0  # filtered tokens are never drawn
    first, second = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for _ in range(50):
        expected = torch.multinomial(probabilities, 1, generator=first).squeeze(-1)
        drawn = draw_tokens(probabilities, second)
        assert torch.equal(drawn, expected)
        assert (drawn >= 100).all()
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    a, b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(sample_tokens(logits, 1.0, 10, 0.9, a), sample_tokens(logits, 1.0, 10, 0.9, b))


def test_workspace_is_reused_across_calls_and_prompt_lengths(assembled):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    engine = DecodeEngine(model)
    prompts = _image_prompts()
    first = engine.generate_codes(collator, prompts, "toy_codes", 8, images_per_prompt=2, seed=1)
    again = engine.generate_codes(collator, prompts, "toy_codes", 8, images_per_prompt=2, seed=1)
    assert torch.equal(first, again)
    shorter = [prompts[0], prompts[0]]  # other prompt length, same rounded capacity
    fast = engine.generate_codes(collator, shorter, "toy_codes", 8, images_per_prompt=2, seed=1)
    assert torch.equal(fast, generate_codes(model, collator, shorter, "toy_codes", 8, images_per_prompt=2, seed=1))
    assert len(engine._workspaces) == 1
    workspace = next(iter(engine._workspaces.values()))
    assert workspace.cache.span == workspace.length < workspace.capacity  # attention read the filled slots only


def test_static_cache_overflow_is_a_clear_error(assembled):  # noqa: F811
    built, _, collator = assembled
    model = built.model.eval()
    engine = DecodeEngine(model)
    batch = collator.left_padded(_text_prompts())
    workspace = engine.workspace(rows=2, positions=batch.input_ids.shape[1] + 1)
    assert workspace.capacity == CAPACITY_ROUNDING
    embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
    with torch.no_grad():
        workspace.prefill(model, embeds, batch.attention_mask, batch.position_ids)
        step = model.backbone.get_input_embeddings()(torch.tensor([1, 2]))
        for _ in range(workspace.capacity - batch.input_ids.shape[1]):
            workspace.reserve_step()
            workspace.advance(model, step)
        with pytest.raises(CacheCapacityError, match=f"holds {CAPACITY_ROUNDING} positions per row"):
            workspace.reserve_step()


def test_compiled_engine_draws_the_eager_engines_codes(assembled):  # noqa: F811
    """The compiled step (dynamic in the attended span, which grows every step) draws
    the eager engine's codes for two prompt batches, and its text tokens."""
    built, _, collator = assembled
    model = built.model.eval()
    eager, compiled = DecodeEngine(model), DecodeEngine(model, compile_mode="default")
    for prompts in (_image_prompts(), _image_prompts()[:1]):
        args = (collator, prompts, "toy_codes", 10)
        expected = eager.generate_codes(*args, images_per_prompt=2, cfg_scale=3.0, temperature=1.0, seed=4)
        assert torch.equal(compiled.generate_codes(*args, images_per_prompt=2, cfg_scale=3.0, temperature=1.0, seed=4), expected)
    answers = eager.generate_text(collator, _text_prompts(), max_new_tokens=12, seed=2)
    assert compiled.generate_text(collator, _text_prompts(), max_new_tokens=12, seed=2) == answers
