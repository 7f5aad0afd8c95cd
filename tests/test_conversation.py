"""The core's conversation layer: the Janus-template renderer (its one-turn cases keep
their segments) and the generic `conversations` data set's options."""

from __future__ import annotations

import json

import pytest

from modal_core.builtins import conversations
from modal_core.data.chat import ASSISTANT, EOS, USER, caption_to_image, question_answer, render_conversation
from modal_core.data.conversation import Conversation, Turn
from modal_core.data.segments import Media, Text
from modal_core.errors import RecipeError


def test_one_turn_builders_keep_their_segments():
    image = Media("pictures", "a.png")
    assert question_answer("what is it?", "a cat", [image]).segments == (
        Text(f"{USER}: "),
        image,
        Text(f"what is it?\n\n{ASSISTANT}:"),
        Text(f" a cat{EOS}", supervised=True),
    )
    assert question_answer("what is it?", None, [image]).segments == (Text(f"{USER}: "), image, Text(f"what is it?\n\n{ASSISTANT}:"))
    drawn = Media("codes", "b.png", supervised=True)
    assert caption_to_image("a cat", drawn, "codes").segments == (Text(f"{USER}: a cat\n\n{ASSISTANT}:"), drawn)
    assert caption_to_image("a cat", None, "codes").segments[-1] == Media("codes", None, supervised=True)


def test_multi_turn_layout_system_prompt_and_cut_points():
    image = Media("pictures", "a.png")
    drawn = Media("codes", "b.png")
    sample = render_conversation(
        Conversation(
            (
                Turn("user", (image, "what is it?")),
                Turn("assistant", ("a cat",)),
                Turn("user", ("draw one",)),
                Turn("assistant", (drawn,)),
            ),
            system="be brief.",
        )
    )
    assert sample.segments == (
        Text(f"{USER}: "),
        image,
        Text(f"what is it?\n\n{ASSISTANT}:"),
        Text(f" a cat{EOS}", supervised=True),
        Text(f"{USER}: draw one\n\n{ASSISTANT}:"),
        Media("codes", "b.png", supervised=True),
    )
    assert sample.system_prompt == "be brief.\n\n" and sample.chat
    assert sample.turn_ends == (4, 6)
    prompt = render_conversation(Conversation((Turn("user", ("hi",)), Turn("assistant", ("hello",)), Turn("user", ("and?",)))))
    assert prompt.segments[-1] == Text(f"{USER}: and?\n\n{ASSISTANT}:") and prompt.turn_ends == ()  # a prompt is never cut
    assert prompt.system_prompt is None
    assert render_conversation(Conversation((Turn("assistant", ("x",)),), system="")).system_prompt == ""


def test_generic_data_set_reads_text_chats_and_checks_its_options(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}) + "\n")
    sample = conversations({"path": str(path), "placeholders": {"<points>": "my_points"}}, 0, "train")[0]
    assert sample.segments == (Text(f"{USER}: hi\n\n{ASSISTANT}:"), Text(f" hello{EOS}", supervised=True))
    assert sample.source == f"{path}:1"
    with pytest.raises(RecipeError, match="map at least one placeholder"):
        conversations({"path": str(path)}, 0, "train")
    with pytest.raises(RecipeError, match=r"placeholder 'POINTS' must look like <name>"):
        conversations({"path": str(path), "placeholders": {"POINTS": "my_points"}}, 0, "train")
