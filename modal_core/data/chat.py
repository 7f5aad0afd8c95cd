"""The Janus chat format: `<|User|>` / `<|Assistant|>` turns separated by a blank line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from modal_core.data.conversation import Conversation, Turn
from modal_core.data.segments import Media, Sample, Segment, Text
from modal_core.errors import DataError

USER = "<|User|>"
ASSISTANT = "<|Assistant|>"
BOS = "<|begin_of_sentence|>"
EOS = "<|end_of_sentence|>"
PAD = "<|pad|>"
CHAT_TOKENS = (USER, ASSISTANT)
JANUS_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language.\n\n"
)
"""The system prompt the official Janus code (and transformers' `JanusProcessor` of the
converted checkpoints) puts before understanding chats; generation prompts get none."""


@dataclass(frozen=True)
class ChatFormat:
    """Text the collator adds around chat samples; the defaults add nothing.

    Janus's official format is `ChatFormat(system_prompt=JANUS_SYSTEM_PROMPT,
    media_separator="\n")`: `<|User|>: <image>\n{question}\n\n<|Assistant|>:`."""

    system_prompt: str = ""
    """Put before chats that draw nothing and bring no system prompt of their own."""
    media_separator: str = ""
    """Put after every input-modality item, unless the text that follows it starts with
    whitespace (then it already has its separator)."""


def render_conversation(conversation: Conversation) -> Sample:
    """Lay out a conversation in the official Janus (DeepSeek `deepseek`) template:
    `{system}\n\n<|User|>: {user}\n\n<|Assistant|>: {assistant}<eos><|User|>: ...`.

    Only assistant turns are supervised: their text with the end-of-sentence token that
    closes a turn ending in text, and the items they generate (a turn that generates an
    item follows the generation template, `<|Assistant|>:` then the item, with no EOS).
    A conversation ending with a user turn ends with `<|Assistant|>:`, ready for decoding,
    and is never cut by the collator; otherwise each assistant turn's end is a `turn_ends`
    cut point. A custom system prompt is followed by a blank line, as the official code
    renders it."""
    segments: list[Segment] = []
    turn_ends: list[int] = []
    for turn in conversation.turns:
        if turn.role == "user":
            _append(segments, Text(f"{USER}: "))
            for part in turn.parts:
                _append(segments, Text(part) if isinstance(part, str) else part)
            _append(segments, Text("\n\n"))
            continue
        _append(segments, Text(f"{ASSISTANT}:"))
        for index, part in enumerate(turn.parts):
            if isinstance(part, str):
                _append(segments, Text(f" {part}" if index == 0 else part, supervised=True))
            else:
                _append(segments, replace(part, supervised=True))
        if isinstance(turn.parts[-1], str):
            _append(segments, Text(EOS, supervised=True))
        turn_ends.append(len(segments))
    if conversation.turns[-1].role == "user":
        _append(segments, Text(f"{ASSISTANT}:"))
        turn_ends = []
    system = conversation.system
    system_prompt = None if system is None else (f"{system}\n\n" if system else "")
    return Sample(tuple(segments), chat=True, system_prompt=system_prompt, turn_ends=tuple(turn_ends))


def _append(segments: list[Segment], segment: Segment) -> None:
    """Add a segment, joining text to text of the same supervision: a prompt is then
    tokenized as one string, as the official code tokenizes it."""
    if isinstance(segment, Text):
        if not segment.text:
            return
        last = segments[-1] if segments else None
        if isinstance(last, Text) and last.supervised == segment.supervised:
            segments[-1] = Text(last.text + segment.text, segment.supervised)
            return
    segments.append(segment)


def question_answer(question: str, answer: str | None, media: Sequence[Media] = ()) -> Sample:
    """A one-turn chat: the user shows media and asks; the assistant's answer (and the
    end-of-sentence token) is supervised. With `answer=None` the sample ends where the
    assistant starts speaking, ready for decoding."""
    turns = [Turn("user", (*media, question))]
    if answer is not None:
        turns.append(Turn("assistant", (answer,)))
    return render_conversation(Conversation(tuple(turns)))


def questions_answers(pairs: Sequence[tuple[str, str]], media: Sequence[Media] = ()) -> Sample:
    """A multi-turn chat about the same media, shown with the first question: one user
    turn per question, each answered (and supervised) before the next is asked."""
    if not pairs:
        raise DataError("questions_answers: expected at least one (question, answer) pair, got none")
    turns = []
    for number, (question, answer) in enumerate(pairs):
        turns += [Turn("user", (*media, question) if number == 0 else (question,)), Turn("assistant", (answer,))]
    return render_conversation(Conversation(tuple(turns)))


def caption_to_image(caption: str, media: Media | None, modality: str) -> Sample:
    """A text-to-image sample in the Janus generation template: the caption as the
    user's turn, then the image the assistant draws. With `media=None` the sample is
    the generation prompt, ending at the image's begin token."""
    drawn = media if media is not None else Media(modality, None, supervised=True)
    return render_conversation(Conversation((Turn("user", (caption,)), Turn("assistant", (drawn,)))))


def plain_text(text: str) -> Sample:
    """A text-only sample, fully supervised (language modelling)."""
    return Sample((Text(f"{text}{EOS}", supervised=True),))
