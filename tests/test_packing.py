"""Sequence packing: several samples per row give each sample the loss, gradients and
logits it has alone, with images in the rows; positions restart; training runs."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_image_recipe, tiny_text_recipe, write_recipe
from omegaconf import OmegaConf
from PIL import Image

from modal_core.assemble import assemble, special_tokens_of
from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.config.schema import Recipe
from modal_core.data.bad_samples import BadSamplePolicy, read_bad_samples
from modal_core.data.chat import caption_to_image, plain_text, question_answer
from modal_core.data.collator import Batch, Collator
from modal_core.data.packing import first_fit_decreasing
from modal_core.data.segments import Media, Sample
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.errors import DataError
from modal_core.training.run import train
from modal_core_images.shapes import render_scene, scene_for_index

MAX_LENGTH = 96
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
"""float32: a sample's numbers in a packed row differ from its own row's only by the
order of floating-point sums over the (masked) keys."""


@pytest.fixture
def image_model(tmp_path, image_plugins):
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), tiny_image_recipe(tmp_path))
    recipe.data.max_length, recipe.data.packing = MAX_LENGTH, True
    corpus = ["a red circle", "what colour is the circle? red", "a blue square left of a green triangle"] * 20
    tokenizer = train_tokenizer(corpus, 300, special_tokens_of(recipe, image_plugins))
    torch.manual_seed(0)
    built = assemble(recipe, image_plugins, tokenizer)
    built.model.eval()  # no dropout: the packed and the lone forward pass must be the same function
    return built, Collator(tokenizer, built.modalities, max_length=MAX_LENGTH)


def _image(index: int) -> Image.Image:
    return render_scene(scene_for_index(index, 0, "train", image_size=32))


def _samples():
    """Mixed lengths and media, so that first-fit decreasing reorders them and several
    images of both modalities share rows."""
    return [
        plain_text("a red circle"),
        question_answer("what colour is the circle?", "red", [Media("image_understanding", _image(1))]),
        caption_to_image("a blue square left of a green triangle", Media("vq_generation", _image(2), supervised=True), "vq_generation"),
        plain_text("a blue square left of a green triangle"),
        question_answer("what is it?", "a circle", [Media("image_understanding", _image(3))]),
        caption_to_image("a red circle", Media("vq_generation", _image(4), supervised=True), "vq_generation"),
    ]


def _layout(collator: Collator, samples) -> list[list[int]]:
    """Which samples the collator puts in which row (the documented first-fit decreasing)."""
    return first_fit_decreasing([len(collator.encode_sample(s).ids) for s in samples], collator.max_length)


def _loss_and_gradients(model, batch: Batch, keep: torch.Tensor | None = None):
    """Per-head loss sums of the positions in `keep` (all when None) and their gradients."""
    model.zero_grad()
    inputs = batch.model_inputs()
    if keep is not None:
        inputs["supervised"] = batch.supervised & keep
    output = model(**inputs)
    torch.stack(list(output.head_loss_sums.values())).sum().backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {name: total.detach() for name, total in output.head_loss_sums.items()}, output.head_counts, gradients


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_batch_gives_each_sample_its_own_loss_and_gradients(image_model, attention):
    built, alone = image_model
    model, packed = built.model, built.collator
    model.backbone.set_attn_implementation(attention)
    samples = _samples()
    layout = _layout(packed, samples)
    batch = packed(samples)
    assert batch.input_ids.shape[0] == len(layout) < len(samples)
    assert batch.input_ids.shape[1] <= MAX_LENGTH
    assert any(len({1, 2, 4, 5} & set(group)) >= 2 for group in layout)  # images of different samples share a row
    for row, group in enumerate(layout):
        for number, index in enumerate(group):
            reference_sums, reference_counts, reference_gradients = _loss_and_gradients(model, alone([samples[index]]))
            keep = torch.zeros_like(batch.supervised)
            keep[row] = batch.sequence_ids[row] == number
            sums, counts, gradients = _loss_and_gradients(model, batch, keep)
            assert {k: int(v) for k, v in counts.items()} == {k: int(v) for k, v in reference_counts.items()}, index
            assert sum(int(v) for v in counts.values()) > 0, index
            for head in sums:
                torch.testing.assert_close(sums[head], reference_sums[head], **TOLERANCE)
            assert reference_gradients.keys() <= gradients.keys()
            for name, gradient in gradients.items():  # a weight only the row's other samples use gets a zero gradient
                expected = reference_gradients.get(name, torch.zeros_like(gradient))
                torch.testing.assert_close(gradient, expected, **TOLERANCE, msg=lambda m, name=name: f"sample {index}, {name}: {m}")


def test_whole_packed_loss_equals_the_unpacked_loss(image_model):
    built, alone = image_model
    samples = _samples()
    packed_output = built.model(**built.collator(samples).model_inputs())
    unpacked_output = built.model(**alone(samples).model_inputs())
    torch.testing.assert_close(packed_output.loss, unpacked_output.loss, **TOLERANCE)
    for head, count in unpacked_output.head_counts.items():
        assert int(packed_output.head_counts[head]) == int(count)


def test_no_sample_predicts_the_first_token_of_the_next(image_model):
    built, _ = image_model
    batch = built.collator(_samples())
    before = built.model(**batch.model_inputs())
    firsts = torch.ones_like(batch.supervised)
    firsts[:, 1:] = batch.sequence_ids[:, 1:] != batch.sequence_ids[:, :-1]
    batch.supervised |= firsts & batch.attention_mask.bool()  # even a supervised first token is no target of the sample before
    after = built.model(**batch.model_inputs())
    assert {k: int(v) for k, v in after.head_counts.items()} == {k: int(v) for k, v in before.head_counts.items()}
    torch.testing.assert_close(after.loss, before.loss, rtol=0, atol=0)


def test_media_masks_follow_their_samples_into_packed_rows(image_model):
    built, alone = image_model
    samples = _samples()
    batch = built.collator(samples)
    for row, group in enumerate(_layout(built.collator, samples)):
        start = 0
        for number, index in enumerate(group):
            single = alone([samples[index]])
            span = slice(start, start + single.input_ids.shape[1])
            assert (batch.sequence_ids[row, span] == number).all()
            assert torch.equal(batch.input_ids[row, span], single.input_ids[0])
            assert torch.equal(batch.position_ids[row, span], torch.arange(single.input_ids.shape[1]))  # positions restart
            for name, media in single.media.items():
                assert torch.equal(batch.media[name].mask[row, span], media.mask[0]), (index, name)
            start = span.stop
        assert not batch.attention_mask[row, start:].any()  # the rest of the row is padding
    for name in ("image_understanding", "vq_generation"):
        items = [index for group in _layout(built.collator, samples) for index in group if name in alone([samples[index]]).media]
        expected = torch.cat([alone([samples[index]]).media[name].payload for index in items])
        assert torch.equal(batch.media[name].payload, expected), name  # row-major, as the masks are


def test_attention_does_not_cross_samples(image_model):
    built, _ = image_model
    model, collator = built.model, built.collator
    samples = _samples()
    original = collator(samples)
    changed_samples = list(samples)
    changed_samples[1] = question_answer("what colour is the circle?", "red", [Media("image_understanding", _image(9))])
    changed = collator(changed_samples)
    row = next(r for r, group in enumerate(_layout(collator, samples)) if 1 in group and len(group) > 1)
    number = _layout(collator, samples)[row].index(1)

    def hidden(batch: Batch) -> torch.Tensor:
        embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
        with torch.no_grad():
            return model.transformer(embeds, batch.attention_mask, batch.position_ids, sequence_ids=batch.sequence_ids).hidden

    before, after = hidden(original)[row], hidden(changed)[row]
    others = original.attention_mask[row].bool() & (original.sequence_ids[row] != number)
    own = original.sequence_ids[row] == number
    assert others.any()
    assert not torch.allclose(before[own], after[own])  # the changed image reaches its own sample...
    torch.testing.assert_close(before[others], after[others], rtol=0, atol=0)  # ...and nothing else in the row


def test_first_fit_decreasing_fills_the_first_bin_with_room():
    assert first_fit_decreasing([5, 4, 3, 3, 2, 1], 8) == [[0, 2], [1, 3, 5], [4]]
    assert first_fit_decreasing([], 8) == []
    with pytest.raises(ValueError, match="item 1 has length 9, over the capacity 8"):
        first_fit_decreasing([1, 9], 8)


def test_too_long_sample_follows_on_bad_sample_when_packing(image_model, tmp_path):
    built, _ = image_model
    long = Sample(plain_text("a red circle " * 40).segments, source="long.jsonl:1")
    samples = [long, plain_text("a red circle"), plain_text("a blue square")]
    raising = Collator(built.tokenizer, built.modalities, max_length=MAX_LENGTH, packing=True)
    with pytest.raises(DataError, match=f"sample from long.jsonl:1 is .* tokens long, over data.max_length={MAX_LENGTH}"):
        raising(samples)
    log = tmp_path / "bad_samples.jsonl"
    skipping = Collator(built.tokenizer, built.modalities, max_length=MAX_LENGTH, packing=True, bad_samples=BadSamplePolicy("skip", log))
    batch = skipping(samples)
    lengths = sorted((len(skipping.encode_sample(sample).ids) for sample in samples[1:]), reverse=True)  # longest first
    assert batch.input_ids.shape == (1, sum(lengths))  # the two short samples share one row
    assert batch.sequence_ids[0].tolist() == [0] * lengths[0] + [1] * lengths[1]
    assert [entry["source"] for entry in read_bad_samples(log)] == ["long.jsonl:1"]


def test_decoding_batches_are_never_packed(image_model):
    built, _ = image_model
    batch = built.collator.left_padded([plain_text("a red circle"), plain_text("a blue square")])
    assert batch.input_ids.shape[0] == 2 and batch.sequence_ids is None
    assert batch.attention_mask[:, -1].all()


def test_training_with_packing_lowers_the_loss_and_logs_padding(tmp_path, plugins):
    def run(name: str, packing: bool):
        recipe = tiny_text_recipe(tmp_path / name, data={"packing": packing}, trainer={"max_steps": 30, "progress_bar": False})
        result = train(load_recipe(write_recipe(tmp_path / f"{name}.yaml", recipe), plugins=plugins), plugins)
        return [r for r in read_history(result.history) if "train/loss" in r]

    packed, unpacked = run("packed", True), run("unpacked", False)
    losses = [r["train/loss"] for r in packed]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    packed_padding, unpacked_padding = ([r["train/padding_fraction"] for r in run] for run in (packed, unpacked))
    assert sum(packed_padding) < 0.6 * sum(unpacked_padding), (packed_padding, unpacked_padding)


def _varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """A stand-in for flash-attention's varlen kernel: causal attention inside each span
    of `cu_seq_lens_q` over the flattened batch, reading no mask."""
    assert attention_mask is None
    batch, heads, length, dim = query.shape
    flat = [t.transpose(1, 2).reshape(batch * length, heads, dim) for t in (query, key, value)]
    edges = kwargs["cu_seq_lens_q"].tolist()
    assert edges == kwargs["cu_seq_lens_k"].tolist() and int(kwargs["max_length_q"]) == max(b - a for a, b in zip(edges, edges[1:]))
    spans = []
    for start, end in zip(edges, edges[1:]):
        q, k, v = (t[start:end].transpose(0, 1) for t in flat)  # (heads, span, dim)
        spans.append(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling).transpose(0, 1))
    return torch.cat(spans).reshape(batch, length, heads, dim), None


def test_varlen_kernels_get_the_sample_boundaries(image_model, monkeypatch):
    """Flash-attention cannot run on CPU; a kernel that, like its varlen path, sees only
    the cumulative sequence lengths gives the hidden states of the masked SDPA path."""
    from transformers import AttentionInterface

    built, _ = image_model
    model = built.model
    batch = built.collator(_samples())
    embeds, _ = model.embed(batch.input_ids, batch.token_ids, batch.media)
    with torch.no_grad():
        masked = model.transformer(embeds, batch.attention_mask, batch.position_ids, sequence_ids=batch.sequence_ids).hidden
        monkeypatch.setitem(AttentionInterface._global_mapping, "test_varlen", _varlen_attention)  # what `register` does, undone after
        model.backbone.set_attn_implementation("test_varlen")
        varlen = model.transformer(embeds, batch.attention_mask, batch.position_ids, sequence_ids=batch.sequence_ids).hidden
    real = batch.attention_mask.bool()
    torch.testing.assert_close(varlen[real], masked[real], **TOLERANCE)
