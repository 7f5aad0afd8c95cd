"""Samples are lists of segments: text, and media items of a named modality."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import torch


@dataclass(frozen=True)
class Text:
    """A run of text. `supervised` text is a training target (an answer, a caption to
    predict); unsupervised text is context (a question, a prompt, a system turn)."""

    text: str
    supervised: bool = False


@dataclass(frozen=True)
class Encoded:
    """A media item that has already been through its modality's encoder: codes `(N,)`
    of an output modality or features `(N, D)` of an input modality, as `modal-core
    prepare` caches them. The model puts them in place without running the encoder."""

    value: torch.Tensor


@dataclass(frozen=True)
class Media:
    """One item of a modality. `payload` is what the modality's processor produced (a
    tensor), a raw item (a path, an image) that the collator sends through it, or an
    `Encoded` item (the encoder's output, cached). A supervised item of an output
    modality is generated (its codes are targets)."""

    modality: str
    payload: Any
    supervised: bool = False


Segment = Union[Text, Media]


@dataclass(frozen=True)
class Sample:
    """One training or inference example.

    `drop_condition` marks a generation sample whose text condition the collator
    replaces by padding (classifier-free guidance training); data sets leave it False and
    the task mixer sets it with probability `data.cfg_dropout`. `chat` marks a sample in
    the chat format (the builders of `modal_core.data.chat` set it), to which the
    collator adds the recipe's chat text (system prompt, media separator).

    `system_prompt` is a chat's own system text, put before its first turn in place of
    the recipe's `chat.system_prompt` (None: the recipe's applies). `turn_ends` lists
    the segment counts at which an assistant turn ends: a sample over `data.max_length`
    is cut at the last of them that fits (whole turns dropped from the end); a sample
    without them is never cut.
    """

    segments: tuple[Segment, ...]
    drop_condition: bool = False
    chat: bool = False
    system_prompt: str | None = None
    turn_ends: tuple[int, ...] = ()
    source: str = field(default="", compare=False)
