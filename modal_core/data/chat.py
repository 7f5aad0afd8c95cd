"""The Janus chat format: `<|User|>` / `<|Assistant|>` turns separated by a blank line."""

from __future__ import annotations

from dataclasses import dataclass

from modal_core.data.segments import Media, Sample, Segment, Text

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
    """Put before chats that open with the user's turn and draw nothing."""
    media_separator: str = ""
    """Put after every input-modality item (before the text that follows it)."""


def question_answer(question: str, answer: str | None, media: list[Media] = ()) -> Sample:
    """A one-turn chat: the user shows media and asks; the assistant's answer (and the
    end-of-sentence token) is supervised. With `answer=None` the sample ends where the
    assistant starts speaking, ready for decoding."""
    segments: list[Segment] = [Text(f"{USER}: "), *media, Text(f"{question}\n\n{ASSISTANT}:")]
    if answer is not None:
        segments.append(Text(f" {answer}{EOS}", supervised=True))
    return Sample(tuple(segments), chat=True)


def caption_to_image(caption: str, media: Media | None, modality: str) -> Sample:
    """A text-to-image sample in the Janus generation template: the caption as the
    user's turn, then the image the assistant draws. With `media=None` the sample is
    the generation prompt, ending at the image's begin token."""
    segments: list[Segment] = [Text(f"{USER}: {caption}\n\n{ASSISTANT}:")]
    segments.append(media if media is not None else Media(modality, None, supervised=True))
    return Sample(tuple(segments), chat=True)


def plain_text(text: str) -> Sample:
    """A text-only sample, fully supervised (language modelling)."""
    return Sample((Text(f"{text}{EOS}", supervised=True),))
