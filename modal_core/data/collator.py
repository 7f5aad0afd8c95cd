"""Turn samples (segment lists) into one padded batch of token/embedding positions.

Each position records which head owns the token sitting there (`token_head`: 0 is the
text head, k >= 1 the k-th output modality's head, -1 a continuous input feature) and
whether that token is a training target (`supervised`). The model predicts the token of
position t+1 from the hidden state of position t with the head that owns it, so a
supervised code position is learned by its modality's head and a supervised text
position by the text head, each on its own positions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from modal_core.data.bad_samples import BadSamplePolicy
from modal_core.data.chat import EOS, ChatFormat
from modal_core.data.segments import Media, Sample, Text
from modal_core.errors import DataError
from modal_core.modality import ModalitySpec, Processor

TEXT_HEAD = 0
NO_HEAD = -1
UNKNOWN_TOKEN = -1


class MediaBatch(NamedTuple):
    """All items of one modality in a batch (a pair, as `UnifiedModel` takes it)."""

    payload: torch.Tensor  # (n, ...) stacked processor outputs
    mask: torch.Tensor  # (B, T) bool: where the n * N embeddings go, in row-major order


@dataclass
class Batch:
    """A collated batch; see the module docstring for the meaning of each field."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    token_ids: torch.Tensor  # (B, T) token of each position in its head's vocabulary, -1 if not known yet
    token_head: torch.Tensor  # (B, T)
    supervised: torch.Tensor  # (B, T) bool
    media: dict[str, MediaBatch] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor on `device`."""
        media = {name: MediaBatch(m.payload.to(device), m.mask.to(device)) for name, m in self.media.items()}
        tensors = (self.input_ids, self.attention_mask, self.position_ids, self.token_ids, self.token_head, self.supervised)
        return Batch(*(t.to(device) for t in tensors), media=media)

    def model_inputs(self) -> dict[str, Any]:
        """The batch as `UnifiedModel.forward`'s keyword arguments."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "token_ids": self.token_ids,
            "token_head": self.token_head,
            "supervised": self.supervised,
            "media": self.media,
        }

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) positions in the batch."""
        return int(self.attention_mask.sum())


@dataclass(frozen=True)
class ModalityRuntime:
    """A modality as the data pipeline sees it: its spec, processor and size."""

    spec: ModalitySpec
    processor: Processor
    num_positions: int
    head_index: int  # NO_HEAD for input modalities


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    supervised: list[bool] = field(default_factory=list)
    media: list[tuple[str, Any, list[int]]] = field(default_factory=list)

    def add(self, ids: Sequence[int], tokens: Sequence[int], head: int, supervised: bool) -> list[int]:
        start = len(self.ids)
        self.ids += ids
        self.tokens += tokens
        self.heads += [head] * len(ids)
        self.supervised += [supervised] * len(ids)
        return list(range(start, len(self.ids)))


class Collator:
    """Callable turning a list of `Sample` into a `Batch`."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        modalities: dict[str, ModalityRuntime],
        max_length: int,
        padding_side: Literal["right", "left"] = "right",
        bad_samples: BadSamplePolicy | None = None,
        chat: ChatFormat | None = None,
        limit_name: str = "data.max_length",
    ) -> None:
        """`limit_name` names `max_length` in errors (inference: the model's context)."""
        self.tokenizer = tokenizer
        self.limit_name = limit_name
        self.chat = chat or ChatFormat()
        self.bad_samples = bad_samples or BadSamplePolicy()
        self.modalities = modalities
        self.max_length = max_length
        self.padding_side = padding_side
        self.pad_id = tokenizer.pad_token_id
        self.bos_id = tokenizer.bos_token_id

    def token_id(self, token: str) -> int:
        """Id of a special token, with an error if the tokenizer lacks it."""
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise DataError(f"the text tokenizer has no special token {token!r}; retrain it or add the token")
        return token_id

    def encode_sample(self, sample: Sample) -> _Row:
        """Lay out one sample's positions (no padding)."""
        row = _Row()
        row.add([self.bos_id], [self.bos_id], TEXT_HEAD, False)
        # Chat-format text joins the text that follows it before tokenizing, so the
        # tokens equal those of the whole prompt string tokenized at once.
        prefix = self.chat.system_prompt if self._is_understanding_chat(sample) else ""
        for segment in sample.segments:
            if isinstance(segment, Text):
                if prefix and segment.supervised:
                    self._add_text(row, prefix, sample.drop_condition, False)
                    prefix = ""
                self._add_text(row, prefix + segment.text, sample.drop_condition, segment.supervised)
                prefix = ""
            elif isinstance(segment, Media):
                if prefix:
                    self._add_text(row, prefix, sample.drop_condition, False)
                self._add_media(row, segment)
                prefix = self.chat.media_separator if self._is_input(segment) and segment.payload is not None else ""
            else:
                raise DataError(f"sample from {sample.source or 'a data set'} has a segment of type {type(segment).__name__}")
        if prefix:
            self._add_text(row, prefix, sample.drop_condition, False)
        if len(row.ids) > self.max_length:
            where = f"sample from {sample.source}" if sample.source else "the input"
            raise DataError(f"{where} is {len(row.ids)} tokens long, over {self.limit_name}={self.max_length}")
        return row

    def _add_text(self, row: _Row, text: str, drop_condition: bool, supervised: bool) -> None:
        if self.tokenizer.eos_token and self.tokenizer.eos_token != EOS:
            text = text.replace(EOS, self.tokenizer.eos_token)  # e.g. DeepSeek's <｜end▁of▁sentence｜>
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if drop_condition and not supervised:
            ids = [self.pad_id] * len(ids)  # CFG training: the condition becomes padding
        row.add(ids, ids, TEXT_HEAD, supervised)

    def _is_input(self, segment: Media) -> bool:
        runtime = self.modalities.get(segment.modality)
        return runtime is not None and runtime.spec.direction == "input"

    def _is_understanding_chat(self, sample: Sample) -> bool:
        """A chat sample (see `Sample.chat`) that draws no output-modality item."""
        return sample.chat and not any(isinstance(s, Media) and not self._is_input(s) for s in sample.segments)

    def _add_media(self, row: _Row, segment: Media) -> None:
        runtime = self.modalities.get(segment.modality)
        if runtime is None:
            raise DataError(f"sample uses modality {segment.modality!r}; this model has {sorted(self.modalities) or 'none'}")
        spec = runtime.spec
        if spec.begin_token:
            begin = self.token_id(spec.begin_token)
            row.add([begin], [begin], TEXT_HEAD, False)
        if segment.payload is None:  # a generation prompt: the model writes the item from here
            return
        placeholder = self.token_id(spec.placeholder_token) if spec.placeholder_token else self.pad_id
        count = runtime.num_positions
        supervised = segment.supervised and spec.direction == "output"
        positions = row.add([placeholder] * count, [UNKNOWN_TOKEN] * count, runtime.head_index, supervised)
        payload = segment.payload if isinstance(segment.payload, torch.Tensor) else runtime.processor(segment.payload)
        row.media.append((segment.modality, payload, positions))
        if spec.end_token:
            end = self.token_id(spec.end_token)
            row.add([end], [end], TEXT_HEAD, False)

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        return self._collate(samples, self.padding_side)

    def left_padded(self, samples: Sequence[Sample]) -> Batch:
        """Collate with padding on the left, so every row's last position is real
        (what decoding needs)."""
        return self._collate(samples, "left")

    def _collate(self, samples: Sequence[Sample], padding_side: str) -> Batch:
        rows = []
        for sample in samples:
            try:
                rows.append(self.encode_sample(sample))
            except DataError as error:
                self.bad_samples.handle(sample.source or "a data set", error)
        if not rows:
            raise DataError(f"every one of the {len(samples)} samples of a batch was bad; see the bad-sample log")
        length = max(len(row.ids) for row in rows)
        batch_size = len(rows)

        def padded(values: list[list], fill: int | bool) -> torch.Tensor:
            # One tensor from padded lists: a tensor per row costs more than the list copies.
            pads = [[fill] * (length - len(row)) for row in values]
            return torch.tensor([pad + row if padding_side == "left" else row + pad for row, pad in zip(values, pads)])

        input_ids = padded([row.ids for row in rows], self.pad_id)
        token_ids = padded([row.tokens for row in rows], UNKNOWN_TOKEN)
        token_head = padded([row.heads for row in rows], NO_HEAD)
        supervised = padded([row.supervised for row in rows], False)
        attention_mask = padded([[1] * len(row.ids) for row in rows], 0)
        payloads: dict[str, list[torch.Tensor]] = {}
        masks: dict[str, torch.Tensor] = {}
        for b, row in enumerate(rows):
            offset = length - len(row.ids) if padding_side == "left" else 0
            for name, payload, positions in row.media:
                payloads.setdefault(name, []).append(payload)
                mask = masks.setdefault(name, torch.zeros((batch_size, length), dtype=torch.bool))
                mask[b, [offset + p for p in positions]] = True
        media = {name: MediaBatch(_stack(name, items), masks[name]) for name, items in payloads.items()}
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return Batch(input_ids, attention_mask, position_ids, token_ids, token_head, supervised, media)


def _stack(name: str, items: list[torch.Tensor]) -> torch.Tensor:
    shapes = {tuple(item.shape) for item in items}
    if len(shapes) > 1:
        raise DataError(f"modality {name!r}: items in one batch have different shapes {sorted(shapes)}; the processor must fix the size")
    return torch.stack(items)
