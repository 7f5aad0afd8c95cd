"""UnifiedModel and the collator: positions, heads, losses and freezing, checked by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.schema import Recipe
from modal_core.data.chat import EOS
from modal_core.data.collator import NO_HEAD, TEXT_HEAD, Collator
from modal_core.data.segments import Media, Sample, Text
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.errors import DataError, ModelInputError


@pytest.fixture
def assembled(toy_plugins):
    recipe = OmegaConf.merge(
        OmegaConf.structured(Recipe),
        {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": {"toy_vector": {}, "toy_codes": {}}},
    )
    tokenizer = train_tokenizer(["a red circle", "what is it", "draw it"] * 20, 280, special_tokens_of(recipe, toy_plugins))
    torch.manual_seed(0)
    built = assemble(recipe, toy_plugins, tokenizer)
    return built, tokenizer, Collator(tokenizer, built.modalities, max_length=64)


def _sample():
    codes = torch.tensor([3, 1, 4, 1])
    features = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    return Sample(
        (
            Text("what is it"),
            Media("toy_vector", features),
            Text(" a red circle", supervised=True),
            Text(" draw it"),
            Media("toy_codes", codes, supervised=True),
        )
    )


def test_collator_marks_exactly_which_head_learns_which_position(assembled):
    built, tokenizer, collator = assembled
    batch = collator([_sample()])
    ids = batch.input_ids[0].tolist()
    tok = tokenizer.convert_tokens_to_ids
    question = tokenizer.encode("what is it", add_special_tokens=False)
    answer = tokenizer.encode(" a red circle", add_special_tokens=False)
    prompt = tokenizer.encode(" draw it", add_special_tokens=False)
    expected_ids = [tokenizer.bos_token_id, *question, tok("<toy>"), *[tok("<toy_slot>")] * 3, tok("</toy>"), *answer, *prompt] + [
        tok("<codes>"),
        *[tok("<code_slot>")] * 4,
        tok("</codes>"),
    ]
    assert ids == expected_ids
    n_q, n_a, n_p = len(question), len(answer), len(prompt)
    feature_start = 1 + n_q + 1
    code_start = feature_start + 3 + 1 + n_a + n_p + 1
    supervised = batch.supervised[0].tolist()
    expected_supervised = [False] * len(ids)
    for i in range(feature_start + 4, feature_start + 4 + n_a):
        expected_supervised[i] = True  # the answer's text tokens
    for i in range(code_start, code_start + 4):
        expected_supervised[i] = True  # the generated codes, not the begin/end markers
    assert supervised == expected_supervised
    heads = batch.token_head[0].tolist()
    code_head = built.model.head_index("toy_codes")
    assert heads[feature_start : feature_start + 3] == [NO_HEAD] * 3
    assert heads[code_start : code_start + 4] == [code_head] * 4
    assert heads[feature_start + 4] == TEXT_HEAD
    assert batch.media["toy_vector"].mask[0].nonzero().flatten().tolist() == list(range(feature_start, feature_start + 3))
    assert batch.media["toy_codes"].mask[0].nonzero().flatten().tolist() == list(range(code_start, code_start + 4))


def test_loss_equals_per_head_cross_entropy_on_own_positions(assembled):
    built, tokenizer, collator = assembled
    model = built.model
    batch = collator([_sample(), Sample((Text("a red circle" + EOS, supervised=True),))])
    output = model(**batch.model_inputs())
    # Reference: recompute embeddings by hand and score each supervised position t+1
    # from hidden t with the head owning position t+1.
    embeds = model.backbone.get_input_embeddings()(batch.input_ids).clone()
    feature_mask = batch.media["toy_vector"].mask
    code_mask = batch.media["toy_codes"].mask
    features = model.adapters["toy_vector"](model.encoders["toy_vector"].encode(batch.media["toy_vector"].payload))
    embeds[feature_mask] = features.reshape(-1, model.hidden_size)
    codes = batch.media["toy_codes"].payload
    embeds[code_mask] = model.adapters["toy_codes"](codes).reshape(-1, model.hidden_size)
    hidden = model.backbone.base_model(
        inputs_embeds=embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).last_hidden_state
    targets = batch.token_ids.clone()
    targets[code_mask] = codes.reshape(-1)
    losses, count = [], 0
    for b in range(2):
        for t in range(batch.input_ids.shape[1] - 1):
            if batch.supervised[b, t + 1] and batch.attention_mask[b, t + 1]:
                head = "text" if batch.token_head[b, t + 1] == TEXT_HEAD else "toy_codes"
                logits = model.logits(head, hidden[b, t])
                losses.append(F.cross_entropy(logits[None], targets[b, t + 1][None]))
                count += 1
    reference = torch.stack(losses).sum() / count
    torch.testing.assert_close(output.loss, reference)
    assert int(output.head_counts["toy_codes"]) == 4
    assert int(output.head_counts["text"]) == count - 4


def test_modalities_absent_from_a_training_batch_come_with_no_items_and_change_nothing(assembled):
    built, _, plain = assembled
    samples = [Sample((Text("a red circle" + EOS, supervised=True),)), Sample((Text("draw it", supervised=True),))]
    training, without = built.collator(samples), plain(samples)
    assert without.media == {}
    assert {name: (media.payload.shape, media.payload.dtype) for name, media in training.media.items()} == {
        "toy_vector": ((0, 3, 5), torch.float32),
        "toy_codes": ((0, 4), torch.long),
    }
    assert not any(media.mask.any() for media in training.media.values())

    def loss_and_gradients(batch):
        built.model.zero_grad(set_to_none=True)
        loss = built.model(**batch.model_inputs()).loss
        loss.backward()
        return loss.detach(), {name: p.grad for name, p in built.model.named_parameters()}

    (loss, gradients), (reference, reference_gradients) = loss_and_gradients(training), loss_and_gradients(without)
    assert torch.equal(loss, reference)
    for name, gradient in gradients.items():
        if name.startswith(("encoders.", "adapters.toy_vector", "adapters.toy_codes")):
            # They ran (on a stand-in item, kept by nothing): a gradient, exactly zero, where there was none.
            assert reference_gradients[name] is None and torch.equal(gradient, torch.zeros_like(gradient)), name
        else:
            assert torch.equal(gradient, reference_gradients[name]), name


def test_every_encoder_runs_once_a_step_whether_its_items_are_raw_cached_or_absent(assembled):
    """What keeps a sharded run's processes in step: each encoder runs once per forward
    pass in each case, and a cached batch's stand-in changes nothing."""
    from modal_core.data.segments import Encoded

    built, _, plain = assembled
    calls = []
    encoder = built.model.encoders["toy_codes"]
    encode = encoder.encode
    encoder.encode = lambda payload: calls.append(payload.shape) or encode(payload)
    raw = _sample()
    cached = Sample(tuple(Media(s.modality, Encoded(s.payload), s.supervised) if s == raw.segments[-1] else s for s in raw.segments))
    absent = Sample((Text("a red circle" + EOS, supervised=True),))
    for sample in (raw, cached, absent):
        calls.clear()
        batch = built.collator([sample])
        loss = built.model(**batch.model_inputs()).loss
        assert len(calls) == 1, sample
    del encoder.encode
    batch = built.collator([cached])
    assert batch.media["toy_codes"].encoded and batch.media["toy_codes"].stand_in.shape == (0, 4)
    assert torch.equal(loss, built.model(**plain([absent]).model_inputs()).loss)
    with_stand_in = built.model(**batch.model_inputs()).loss
    assert torch.equal(with_stand_in, built.model(**plain([cached]).model_inputs()).loss)


def test_a_modality_that_declares_no_payload_shape_is_left_out_of_batches_without_it(assembled):
    import dataclasses

    built, tokenizer, _ = assembled
    runtimes = {name: dataclasses.replace(runtime, payload_shape=None) for name, runtime in built.modalities.items()}
    collator = Collator(tokenizer, runtimes, max_length=64, every_modality=True)
    batch = collator([Sample((Text("a red circle" + EOS, supervised=True),))])
    assert batch.media == {}
    features = collator([_sample()]).media["toy_vector"].payload
    assert features.shape == (1, 3, 5)  # no declared shape to check it against


def test_payloads_off_their_declared_shape_are_refused(assembled):
    _, _, collator = assembled
    with pytest.raises(
        DataError, match=r"'toy_vector': the processor returned torch.float32 items of shape \(2, 5\), but its ModalitySpec"
    ):
        collator([Sample((Media("toy_vector", torch.zeros(2, 5)),))])


def test_condition_dropout_pads_prompt_but_keeps_markers(assembled):
    _, tokenizer, collator = assembled
    sample = _sample()
    dropped = collator([Sample(sample.segments, drop_condition=True)])
    kept = collator([sample])
    pad = tokenizer.pad_token_id
    changed = (dropped.input_ids != kept.input_ids)[0]
    # exactly the unsupervised text tokens became padding; BOS, markers, answer stay
    assert set(dropped.input_ids[0][changed].tolist()) == {pad}
    assert dropped.input_ids[0, 0] == tokenizer.bos_token_id
    assert int(changed.sum()) == len(tokenizer.encode("what is it", add_special_tokens=False)) + len(
        tokenizer.encode(" draw it", add_special_tokens=False)
    )
    assert torch.equal(dropped.supervised, kept.supervised)


def test_placeholder_count_mismatch_is_caught(assembled):
    built, _, collator = assembled
    batch = collator([_sample()])
    batch.media["toy_vector"].mask[0, 1] = True  # one placeholder too many
    with pytest.raises(ModelInputError, match="4 placeholder positions"):
        built.model(**batch.model_inputs())


def test_too_long_sample_and_unknown_modality_are_clear(assembled):
    _, _, collator = assembled
    collator.max_length = 5
    with pytest.raises(DataError, match="over data.max_length=5"):
        collator([_sample()])
    collator.max_length = 64
    with pytest.raises(DataError, match="modality 'audio'"):
        collator([Sample((Media("audio", torch.zeros(1)),))])


def test_left_padding_gives_positions_from_the_first_real_token(assembled):
    _, _, collator = assembled
    collator.padding_side = "left"
    batch = collator([_sample(), Sample((Text("a"),))])
    row = batch.position_ids[1]
    real = batch.attention_mask[1].bool()
    assert row[real].tolist() == list(range(int(real.sum())))
    assert not batch.attention_mask[1, 0]


def test_stage_freezing_changes_only_trainable_groups(assembled):
    built, _, collator = assembled
    model = built.model
    model.set_trainable(["adapters", "heads.toy_codes"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    model(**collator([_sample()]).model_inputs()).loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param)
        trainable = name.startswith(("adapters.", "heads.toy_codes"))
        assert changed == trainable, name
    with pytest.raises(Exception, match="unknown parameter group 'adapterz'"):
        model.set_trainable(["adapterz"])


def test_frozen_encoders_stay_in_eval_mode(assembled):
    model = assembled[0].model
    model.set_trainable(["backbone"])
    model.train()
    assert model.backbone.training and not model.encoders["toy_vector"].training
