"""The Janus chat format: `<|User|>` / `<|Assistant|>` turns separated by a blank line."""

from __future__ import annotations

from modal_core.data.segments import Media, Sample, Segment, Text

USER = "<|User|>"
ASSISTANT = "<|Assistant|>"
BOS = "<|begin_of_sentence|>"
EOS = "<|end_of_sentence|>"
PAD = "<|pad|>"
CHAT_TOKENS = (USER, ASSISTANT)


def question_answer(question: str, answer: str | None, media: list[Media] = ()) -> Sample:
    """A one-turn chat: the user shows media and asks; the assistant's answer (and the
    end-of-sentence token) is supervised. With `answer=None` the sample ends where the
    assistant starts speaking, ready for decoding."""
    segments: list[Segment] = [Text(f"{USER}: "), *media, Text(f"{question}\n\n{ASSISTANT}:")]
    if answer is not None:
        segments.append(Text(f" {answer}{EOS}", supervised=True))
    return Sample(tuple(segments))


def caption_to_image(caption: str, media: Media | None, modality: str) -> Sample:
    """A text-to-image sample in the Janus generation template: the caption as the
    user's turn, then the image the assistant draws. With `media=None` the sample is
    the generation prompt, ending at the image's begin token."""
    segments: list[Segment] = [Text(f"{USER}: {caption}\n\n{ASSISTANT}:")]
    segments.append(media if media is not None else Media(modality, None, supervised=True))
    return Sample(tuple(segments))


def plain_text(text: str) -> Sample:
    """A text-only sample, fully supervised (language modelling)."""
    return Sample((Text(f"{text}{EOS}", supervised=True),))
