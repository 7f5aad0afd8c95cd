"""Conversation files (LLaVA / ShareGPT, OpenAI-style messages) laid out in the Janus chat
format: token by token against a hand layout and against the converted checkpoint's chat
template, supervision position by position, each bad input, and a short training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_BACKBONE
from omegaconf import OmegaConf
from PIL import Image
from test_image_plugins import TINY_IMAGES
from transformers import PreTrainedTokenizerFast

from modal_core.assemble import assemble, special_tokens_of
from modal_core.config.schema import Recipe
from modal_core.data.bad_samples import BadSamplePolicy, read_bad_samples
from modal_core.data.chat import JANUS_SYSTEM_PROMPT, ChatFormat, caption_to_image
from modal_core.data.collator import Collator
from modal_core.data.mixture import MixtureDataset
from modal_core.data.segments import Media
from modal_core.data.text_tokenizer import train_tokenizer
from modal_core.errors import DataError
from modal_core_images.datasets import image_conversations
from modal_core_images.janus.tokenizer_files import CHAT_TEMPLATE
from modal_core_images.modalities import GENERATION, UNDERSTANDING

JANUS_FORMAT = ChatFormat(system_prompt=JANUS_SYSTEM_PROMPT, media_separator="\n")
WORDS = ["what is it?", "a red square", "a blue circle", "and this?", "draw a red square", "be brief.", "compare them", "how many?"]
IMAGE_POSITIONS = 16  # 32 px images in 8 px patches; the VQ codes of 32 px images are 4 x 4 too


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder with red.png and blue.png (32 x 32)."""
    folder = tmp_path_factory.mktemp("images")
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        Image.new("RGB", (32, 32), colour).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def built():
    from conftest import with_image_plugins

    from modal_core.plugins import PluginManager

    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    recipe = OmegaConf.merge(OmegaConf.structured(Recipe), {"output_dir": "unused", "backbone": TINY_BACKBONE, "modalities": TINY_IMAGES})
    tokenizer = train_tokenizer([JANUS_SYSTEM_PROMPT, *WORDS] * 20, 400, special_tokens_of(recipe, plugins))
    return assemble(recipe, plugins, tokenizer)


def _collator(built, max_length: int = 256, chat: ChatFormat = JANUS_FORMAT, bad_samples: BadSamplePolicy | None = None) -> Collator:
    return Collator(built.tokenizer, built.modalities, max_length=max_length, chat=chat, bad_samples=bad_samples)


def _write(path: Path, records: list, as_list: bool = False) -> Path:
    text = json.dumps(records) if as_list else "\n".join(json.dumps(record) for record in records) + "\n"
    path.write_text(text)
    return path


def _llava(*turns: tuple[str, str], image=None) -> dict:
    record = {"id": "x", "conversations": [{"from": role, "value": value} for role, value in turns]}
    return record if image is None else {**record, "image": image}


def _expected_layout(tokenizer, pieces: list) -> tuple[list[int], list[bool]]:
    """Token ids and supervision of a hand layout: (text, supervised) pairs and
    (token, count) runs of image positions."""
    ids, supervised = [tokenizer.bos_token_id], [False]
    for piece in pieces:
        if isinstance(piece[0], str) and isinstance(piece[1], bool):
            text_ids = tokenizer.encode(piece[0], add_special_tokens=False)
            ids += text_ids
            supervised += [piece[1]] * len(text_ids)
        else:
            token, count, is_target = piece
            ids += [tokenizer.convert_tokens_to_ids(token)] * count
            supervised += [is_target] * count
    return ids, supervised


def _image(is_target: bool = False) -> list:
    return [("<begin_of_image>", 1, False), ("<image_placeholder>", IMAGE_POSITIONS, is_target), ("<end_of_image>", 1, False)]


def test_llava_json_is_laid_out_as_the_official_template_and_supervises_only_answers(built, images, tmp_path):
    turns = [("human", "<image>\nwhat is it?"), ("gpt", "a red square"), ("human", "and this? <image>"), ("gpt", "a blue circle")]
    record = _llava(*turns, image=["red.png", "blue.png"])
    path = _write(tmp_path / "chat.json", [record], as_list=True)
    dataset = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")
    batch = _collator(built)([dataset[0]])
    eos = built.tokenizer.eos_token
    ids, supervised = _expected_layout(
        built.tokenizer,
        [
            (JANUS_SYSTEM_PROMPT + "<|User|>: ", False),
            *_image(),
            ("\nwhat is it?\n\n<|Assistant|>:", False),
            (" a red square" + eos, True),
            ("<|User|>: and this? ", False),
            *_image(),
            ("\n\n<|Assistant|>:", False),
            (" a blue circle" + eos, True),
        ],
    )
    assert batch.input_ids[0].tolist() == ids
    assert batch.supervised[0].tolist() == supervised
    eos_id = built.tokenizer.eos_token_id
    ends = [i for i, token in enumerate(ids) if token == eos_id]
    assert len(ends) == 2 and all(batch.supervised[0, i] for i in ends)  # each assistant turn ends in a supervised EOS
    # The images go in the order of their placeholders.
    processor = built.modalities[UNDERSTANDING].processor
    expected_pixels = torch.stack([processor(Image.open(images / name)) for name in ("red.png", "blue.png")])
    assert torch.equal(batch.media[UNDERSTANDING].payload, expected_pixels)
    assert int(batch.media[UNDERSTANDING].mask.sum()) == 2 * IMAGE_POSITIONS


CHATS = {
    "custom system prompt, two images in one turn, a text-only turn": [
        {"role": "system", "content": [{"type": "text", "text": "be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "compare them"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a red square"}]},
        {"role": "user", "content": [{"type": "text", "text": "how many?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a blue circle"}]},
    ],
    "default system prompt, images after text and in a later turn": [
        {"role": "user", "content": [{"type": "text", "text": "what is it?"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a red square"}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a blue circle"}]},
    ],
}


@pytest.mark.parametrize("name", list(CHATS))
def test_messages_jsonl_equals_the_converted_checkpoint_chat_template(built, images, tmp_path, name):
    messages = CHATS[name]
    path = _write(tmp_path / "chat.jsonl", [{"messages": messages, "images": ["red.png", "blue.png"]}])
    sample = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")[0]
    ours = _collator(built)([sample]).input_ids[0].tolist()

    ours_tokenizer = built.tokenizer
    hf = PreTrainedTokenizerFast(tokenizer_object=ours_tokenizer.backend_tokenizer, eos_token=ours_tokenizer.eos_token)
    text = hf.apply_chat_template(messages, chat_template=CHAT_TEMPLATE, tokenize=False)
    if messages[0]["role"] == "system":
        assert text.startswith("be brief.\n\n<|User|>: ")  # the official rendering, not "System: ..."
    else:
        text = JANUS_SYSTEM_PROMPT + text  # what JanusProcessor(use_default_system_prompt=True) prepends
    # JanusProcessor expands each image placeholder into the image's positions.
    expanded = text.replace("<image_placeholder>", "<begin_of_image>" + "<image_placeholder>" * IMAGE_POSITIONS + "<end_of_image>")
    assert ours == [ours_tokenizer.bos_token_id, *ours_tokenizer.encode(expanded, add_special_tokens=False)]


def test_text_to_image_pair_is_the_generation_template(built, images, tmp_path):
    path = _write(tmp_path / "t2i.jsonl", [_llava(("human", "draw a red square"), ("gpt", "<image>"), image="red.png")])
    sample = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")[0]
    expected = caption_to_image("draw a red square", Media(GENERATION, images / "red.png", supervised=True), GENERATION)
    assert sample.segments == expected.segments


def test_generation_turn_inside_a_conversation_supervises_codes_and_answer(built, images, tmp_path):
    messages = [
        {"role": "user", "content": [{"type": "image", "image": "blue.png"}, {"type": "text", "text": "what is it?"}]},
        {"role": "assistant", "content": "a blue circle"},
        {"role": "user", "content": "draw a red square"},
        {"role": "assistant", "content": [{"type": "image", "path": "red.png"}]},
    ]
    path = _write(tmp_path / "mixed.jsonl", [{"messages": messages}])
    batch = _collator(built)([image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")[0]])
    eos = built.tokenizer.eos_token
    # A chat that draws gets no default system prompt (as Janus's generation prompts).
    ids, supervised = _expected_layout(
        built.tokenizer,
        [
            ("<|User|>: ", False),
            *_image(),
            ("\nwhat is it?\n\n<|Assistant|>:", False),
            (" a blue circle" + eos, True),
            ("<|User|>: draw a red square\n\n<|Assistant|>:", False),
            *_image(is_target=True),
        ],
    )
    assert batch.input_ids[0].tolist() == ids
    assert batch.supervised[0].tolist() == supervised
    head = built.modalities[GENERATION].head_index
    assert (batch.token_head[0] == head).sum() == IMAGE_POSITIONS
    assert batch.supervised[0][batch.token_head[0] == head].all()
    assert batch.media[GENERATION].payload.shape[0] == 1 and batch.media[UNDERSTANDING].payload.shape[0] == 1


def test_paths_resolve_against_image_root_or_else_the_file_folder(images, tmp_path):
    record = _llava(("human", "<image>\nwhat is it?"), ("gpt", "a red square"), image="red.png")
    beside = _write(images / "beside.jsonl", [record])
    assert image_conversations({"path": str(beside)}, 0, "train")[0].segments[1].payload == images / "red.png"
    elsewhere = _write(tmp_path / "elsewhere.jsonl", [record])
    assert image_conversations({"path": str(elsewhere), "image_root": str(images)}, 0, "train")[0].segments[1].payload == images / "red.png"
    with pytest.raises(DataError, match=rf"{elsewhere}:1: media file not found: {tmp_path / 'red.png'}"):
        image_conversations({"path": str(elsewhere)}, 0, "train")[0]


BAD_RECORDS = {
    "placeholders != images": (
        _llava(("human", "<image><image> compare them"), ("gpt", "a red square"), image="red.png"),
        r"2 <image> placeholder\(s\) but 1 file\(s\) in 'image'",
    ),
    "images without placeholder": (
        {"messages": [{"role": "user", "content": "what is it?"}, {"role": "assistant", "content": "x"}], "images": ["red.png"]},
        r"0 <image> placeholder\(s\) but 1 file\(s\) in 'images'",
    ),
    "missing image": (_llava(("human", "<image>"), ("gpt", "a red square"), image="green.png"), r"media file not found: .*green\.png"),
    "unknown from": (_llava(("human", "what is it?"), ("bot", "a red square")), r"conversations\[1\]\.from is \"bot\"; expected one of"),
    "unknown role": ({"messages": [{"role": "tool", "content": "x"}]}, r"messages\[0\]\.role is \"tool\"; expected one of"),
    "empty conversation": (_llava(), r"empty conversation"),
    "only a question": (_llava(("human", "what is it?")), r"the conversation ends with a user turn that no assistant turn answers"),
    "empty turn": (_llava(("human", "what is it?"), ("gpt", "  ")), r"conversations\[1\] is empty"),
    "neither format": ({"id": 1, "text": "hello"}, r"expected a 'conversations' list"),
    "unknown part": (
        {"messages": [{"role": "user", "content": [{"type": "video"}]}, {"role": "assistant", "content": "x"}]},
        r"messages\[0\]\.content\[0\]: expected a part of type text \| image",
    ),
}


@pytest.mark.parametrize("as_list", [False, True], ids=["jsonl", "json"])
@pytest.mark.parametrize("name", list(BAD_RECORDS))
def test_bad_records_name_file_and_line_or_index(images, tmp_path, name, as_list):
    record, message = BAD_RECORDS[name]
    good = _llava(("human", "<image>"), ("gpt", "a red square"), image="red.png")
    path = _write(tmp_path / "bad.json", [good, record], as_list=as_list)
    dataset = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")
    dataset[0]
    where = rf"{path}\[1\]" if as_list else rf"{path}:2"
    with pytest.raises(DataError, match=rf"^{where}: {message}"):
        dataset[1]


def test_non_utf8_text_fails_its_record_only(images, tmp_path):
    good = json.dumps(_llava(("human", "<image>"), ("gpt", "a red square"), image="red.png")).encode()
    bad = json.dumps(_llava(("human", "<image>"), ("gpt", "caf#"), image="red.png")).encode().replace(b"#", b"\xe9")
    files = [(tmp_path / "a.jsonl", good + b"\n" + bad + b"\n", ":2"), (tmp_path / "a.json", b"[" + good + b"," + bad + b"]", r"\[1\]")]
    for path, data, where in files:
        path.write_bytes(data)
        dataset = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")
        assert len(dataset) == 2 and dataset[0].segments
        with pytest.raises(DataError, match=rf"^{path}{where}: not UTF-8"):
            dataset[1]


def test_skip_records_bad_conversations_and_the_stream_goes_on(images, tmp_path):
    good = _llava(("human", "<image>"), ("gpt", "a red square"), image="red.png")
    records = [good, BAD_RECORDS["placeholders != images"][0], BAD_RECORDS["unknown from"][0]]
    path = _write(tmp_path / "mixed.jsonl", records)
    log = tmp_path / "bad.jsonl"
    dataset = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")
    mixture = MixtureDataset([("chats", dataset, 1.0)], seed=0, bad_samples=BadSamplePolicy("skip", log))
    assert {mixture[k].source for k in range(30)} == {f"{path}:1"}
    reasons = {entry["source"]: entry["reason"] for entry in read_bad_samples(log)}
    assert set(reasons) == {"chats[1]", "chats[2]"}
    assert reasons["chats[1]"].startswith(f"{path}:2: 2 <image> placeholder(s)")
    assert reasons["chats[2]"].startswith(f"{path}:3: conversations[1].from")


def test_long_conversation_drops_whole_turns_from_the_end(built, images, tmp_path):
    turns = [("human", "<image>\nwhat is it?"), ("gpt", "a red square"), ("human", "<image>\nand this?"), ("gpt", "a blue circle")]
    path = _write(tmp_path / "long.jsonl", [_llava(*turns, image=["red.png", "blue.png"]), _llava(*turns[:2], image="red.png")])
    dataset = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")
    full, first_turn = (_collator(built)([dataset[i]]) for i in (0, 1))
    limit = first_turn.input_ids.shape[1] + IMAGE_POSITIONS  # room for the first turn and half the second image
    cut = _collator(built, max_length=limit)([dataset[0]])
    assert full.input_ids.shape[1] > limit
    assert torch.equal(cut.input_ids, first_turn.input_ids) and torch.equal(cut.supervised, first_turn.supervised)
    assert torch.equal(cut.media[UNDERSTANDING].payload, first_turn.media[UNDERSTANDING].payload)  # the second image is gone whole


def test_conversation_whose_first_turn_does_not_fit_is_a_bad_sample(built, images, tmp_path):
    path = _write(tmp_path / "long.jsonl", [_llava(("human", "<image>\nwhat is it?"), ("gpt", "a red square"), image="red.png")])
    sample = image_conversations({"path": str(path), "image_root": str(images)}, 0, "train")[0]
    with pytest.raises(DataError, match=rf"sample from {path}:1 is \d+ tokens long, over data.max_length=20; its first assistant turn"):
        _collator(built, max_length=20)([sample])
    log = tmp_path / "bad.jsonl"
    short = _llava(("human", "hi"), ("gpt", "x"))
    fine = image_conversations({"path": str(_write(tmp_path / "short.jsonl", [short]))}, 0, "train")[0]
    batch = _collator(built, max_length=20, chat=ChatFormat(), bad_samples=BadSamplePolicy("skip", log))([sample, fine])
    assert batch.input_ids.shape[0] == 1
    assert read_bad_samples(log)[0]["source"] == f"{path}:1"


def test_training_on_a_llava_file_lowers_the_loss(tmp_path):
    from conftest import tiny_image_recipe, with_image_plugins, write_recipe

    from modal_core.checkpoints.run_folder import read_history
    from modal_core.config.loader import load_recipe
    from modal_core.plugins import PluginManager
    from modal_core.training.run import train
    from modal_core_images.shapes import questions, render_scene, scene_for_index

    records = []
    for index in range(4):
        scene = scene_for_index(index, 0, "train", image_size=32, num_objects=1)
        render_scene(scene).save(tmp_path / f"{index}.png")
        (first_question, first_answer), (second_question, second_answer) = questions(scene)[:2]
        turns = [("human", f"<image>\n{first_question}"), ("gpt", first_answer), ("human", second_question), ("gpt", second_answer)]
        records.append(_llava(*turns, image=f"{index}.png"))
    data = _write(tmp_path / "llava.json", records, as_list=True)
    recipe = tiny_image_recipe(tmp_path / "run")
    recipe["data"] = {**recipe["data"], "sources": [{"dataset": "image_conversations", "options": {"path": str(data)}}], "max_length": 96}
    recipe["trainer"] = {**recipe["trainer"], "max_steps": 10}
    recipe["optim"] = {**recipe["optim"], "lr": 1e-2}
    plugins = with_image_plugins(PluginManager(load_entry_points=False))
    result = train(load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe), plugins=plugins), plugins)
    losses = [r["train/loss"] for r in read_history(result.history) if "train/loss" in r]
    assert len(losses) == 10
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, (first, last, losses)
