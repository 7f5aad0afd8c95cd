"""What a modality plugin contributes: one frozen `ModalitySpec` per modality.

A modality is an (encoder, adapter, head) triple plus its data handling:

- ``direction="input"``: the encoder turns a payload batch into continuous features
  ``(n, N, D)``; the adapter maps them into the backbone's width ``(n, N, hidden)``;
  the model reads them, and the shared text head answers.
- ``direction="output"``: the encoder is a tokenizer turning a payload batch into codes
  ``(n, N)`` (and back with ``decode``); the adapter embeds codes into ``(n, N, hidden)``;
  the modality's own head predicts the next code from a hidden state.

The core never looks at a modality's name: every modality enters the shared transformer
as embeddings at its placeholder positions, and output modalities add one head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import torch
from torch import nn


class ModalityEncoder(Protocol):
    """Encoder protocol. ``encode`` returns features ``(n, N, D)`` for input
    modalities and integer codes ``(n, N)`` for output modalities; output encoders
    also ``decode`` codes back into a payload batch."""

    def encode(self, payload: torch.Tensor) -> torch.Tensor: ...


class OutputModalityEncoder(ModalityEncoder, Protocol):
    """An output modality's encoder: a tokenizer that can also decode."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...


class VariableItem(NamedTuple):
    """A processed item whose size depends on its content, e.g. an image cut into a grid
    of tiles chosen from its aspect ratio: what a processor returns instead of a tensor.

    The item's payload holds `k` units of the spec's `payload_shape` each (`k` tiles); the
    collator concatenates the units of a batch's items (encoders see ``(sum k, *shape)``,
    features ``(sum k, N, D)``), lays out the item's positions as `layout` says, and
    writes the features into its placeholder positions in order."""

    payload: torch.Tensor  # (k, *payload_shape)
    layout: tuple[int | str, ...]
    """The item's positions in order: an int n is n placeholder positions (the next n
    features), a str one special token between them (e.g. a tile-row separator)."""
    description: str = ""
    """How the item was laid out, for people (e.g. "2x3 tiles + thumbnail")."""

    @property
    def num_features(self) -> int:
        """Placeholder positions the item fills."""
        return sum(part for part in self.layout if isinstance(part, int))


Processor = Callable[[Any], "torch.Tensor | VariableItem"]
"""Turns one raw item (a path, bytes, an object) into the payload tensor of one item, or
into a `VariableItem` for modalities whose items differ in size."""


@dataclass(frozen=True)
class ModalitySpec:
    """Everything the core needs to know about one modality.

    Builders receive the modality's options (an instance of ``options``, validated from
    the recipe's ``modalities.<name>`` block) and, for adapter and head, the backbone's
    hidden size. They return plain ``nn.Module`` objects.
    """

    name: str
    """Unique name; the recipe key under ``modalities:``."""
    direction: Literal["input", "output"]
    """``input``: features read by the model; ``output``: codes the model generates."""
    options: type
    """Dataclass type of the modality's recipe options (the schema)."""
    build_encoder: Callable[[Any], nn.Module]
    """``(options) -> encoder`` following `ModalityEncoder`."""
    build_adapter: Callable[[Any, int], nn.Module]
    """``(options, hidden_size) -> adapter`` mapping encoder output to ``(n, N, hidden)``."""
    build_processor: Callable[[Any], Processor]
    """``(options) -> processor`` turning one raw item into a payload tensor."""
    num_positions: Callable[[Any], int]
    """``(options) -> N``, the number of sequence positions one item occupies; for a
    processor returning `VariableItem`s, the most placeholder positions one item fills."""
    build_head: Callable[[Any, int], nn.Module] | None = None
    """``(options, hidden_size) -> head`` giving ``(..., codebook)`` logits; ``None`` for
    input modalities, which are answered by the shared text head."""
    begin_token: str = ""
    """Special token placed before the item's positions (e.g. ``<begin_of_image>``)."""
    end_token: str = ""
    """Special token placed after the item's positions (e.g. ``<end_of_image>``)."""
    placeholder_token: str = ""
    """Special token standing in the input ids where the item's embeddings go."""
    payload_shape: Callable[[Any], tuple[int, ...]] | None = None
    """``(options) -> shape`` of one item's payload, the fixed shape the processor returns
    (e.g. ``(3, size, size)``). Training batches hold a zero-item payload
    ``(0, *shape)`` of every modality absent from them, so every process runs every
    encoder and adapter in every step (what FSDP's and DDP's collectives need). Without
    it, batches lacking this modality skip its modules, which is fine on one process but
    stops DDP and FSDP runs whose processes' batches differ in modalities."""
    payload_dtype: torch.dtype = torch.float32
    """The dtype of the processor's payload tensors (e.g. ``torch.long`` for codes)."""
    to_output: Callable[[torch.Tensor], list[Any]] | None = None
    """Output modalities: decoded payload batch -> user-facing objects (e.g. PIL images)."""
    save_preview: Callable[[list[Any], list[str], Path], None] | None = None
    """Output modalities: write a picture of some `to_output` objects with a caption
    each to a PNG file (preference tuning's rollout grids); None: no pictures."""
    cli_flag: str | None = None
    """Flag name for ``modal-core understand --<cli_flag> PATH`` (input modalities)."""
    keyword: str | None = None
    """Input modalities: the keyword that hands this modality an item in
    ``Pipeline.answer(question, <keyword>=item)``, a shorthand for
    ``media={name: item}``; unique among a model's modalities."""
    description: str = ""
    """One line shown by ``modal-core plugins``."""
    layout_tokens: Callable[[Any], tuple[str, ...]] | None = None
    """``(options) -> tokens``: special tokens the options' item layouts use besides
    begin/end/placeholder (e.g. tile separators); added to the text tokenizer only when
    the options use them, so models trained without them keep their vocabulary."""
    positions_summary: Callable[[Any], str] | None = None
    """``(options) -> line`` saying how many positions an item takes, for ``modal-core plan``
    (default: ``num_positions``)."""
    weight_paths: tuple[str, ...] = ()
    """Option keys naming pretrained weights to load (e.g. a SigLIP directory; a dotted key
    such as ``encoder.path`` names an option of a nested block). A full
    modal-core checkpoint already holds those weights, so loading one clears these keys."""

    def __post_init__(self) -> None:
        if self.direction not in ("input", "output"):
            raise ValueError(f"ModalitySpec {self.name!r}: direction must be 'input' or 'output', got {self.direction!r}")
        if self.direction == "output" and self.build_head is None:
            raise ValueError(f"ModalitySpec {self.name!r}: an output modality needs build_head")

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """The special tokens this modality needs in the text tokenizer."""
        return tuple(t for t in (self.begin_token, self.end_token, self.placeholder_token) if t)
