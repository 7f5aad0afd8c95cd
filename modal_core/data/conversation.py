"""A conversation: turns of text and media items, before any chat format is applied.

The format-independent shape of chat data (LLaVA / ShareGPT, OpenAI `messages`, one-turn
question-answer pairs, text-to-image pairs). `modal_core.data.chat.render_conversation`
lays it out as a `Sample` in the Janus chat format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from modal_core.data.segments import Media

Part = Union[str, Media]
"""A piece of a turn: text, or one item of a modality. A media item in a user turn is an
input (an image to understand); in an assistant turn it is an item to generate."""


@dataclass(frozen=True)
class Turn:
    """One speaker's turn; `parts` are in reading order and not empty."""

    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Conversation:
    """Turns in order, and the conversation's own system prompt (None: the recipe's
    `chat.system_prompt` applies; an empty string: no system prompt at all).

    Ending with a user turn makes the conversation a prompt: the assistant speaks next."""

    turns: tuple[Turn, ...]
    system: str | None = None
