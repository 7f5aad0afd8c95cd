"""Turn samples (segment lists) into one padded batch of token/embedding positions.

Each position records which head owns the token sitting there (`token_head`: 0 is the
text head, k >= 1 the k-th output modality's head, -1 a continuous input feature) and
whether that token is a training target (`supervised`). The model predicts the token of
position t+1 from the hidden state of position t with the head that owns it, so a
supervised code position is learned by its modality's head and a supervised text
position by the text head, each on its own positions only.

With packing (`data.packing`) several samples share a row of at most `max_length`
positions (first-fit decreasing over the batch's samples): `sequence_ids` numbers the
samples of each row, position ids restart at each sample, and the model keeps
attention inside each sample, so every sample's loss is what it would be alone.

Training batches (`every_modality`) hold every enabled modality in `media`, those
without items as a zero-item payload: under FSDP and DDP every process must run the
same modules in every step, or their collectives stop matching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from modal_core.data.bad_samples import BadSamplePolicy
from modal_core.data.chat import EOS, ChatFormat
from modal_core.data.packing import first_fit_decreasing
from modal_core.data.segments import Encoded, Media, Sample, Text
from modal_core.errors import DataError
from modal_core.modality import ModalitySpec, Processor, VariableItem

TEXT_HEAD = 0
NO_HEAD = -1
UNKNOWN_TOKEN = -1


class MediaBatch(NamedTuple):
    """All items of one modality in a batch, as `UnifiedModel` takes them."""

    payload: torch.Tensor  # (n, ...) stacked processor outputs, or encoder outputs when `encoded`
    mask: torch.Tensor  # (B, T) bool: where the n * N embeddings go, in row-major order
    encoded: bool = False  # the items are `Encoded` (cached codes or features): the encoder is skipped
    stand_in: torch.Tensor | None = None  # with `encoded`, in training: a zero-item payload the encoder runs on instead


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
    sequence_ids: torch.Tensor | None = None  # (B, T) packed rows only: which sample of its row each position holds

    def to(self, device: torch.device | str) -> Batch:
        """The batch with every tensor on `device`."""
        media = {
            name: MediaBatch(m.payload.to(device), m.mask.to(device), m.encoded, None if m.stand_in is None else m.stand_in.to(device))
            for name, m in self.media.items()
        }
        tensors = (self.input_ids, self.attention_mask, self.position_ids, self.token_ids, self.token_head, self.supervised)
        sequence_ids = None if self.sequence_ids is None else self.sequence_ids.to(device)
        return Batch(*(t.to(device) for t in tensors), media=media, sequence_ids=sequence_ids)

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
            "sequence_ids": self.sequence_ids,
        }

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) positions in the batch."""
        return int(self.attention_mask.sum())

    @property
    def padding_fraction(self) -> float:
        """Share of the batch's positions that are padding."""
        return 1.0 - self.num_tokens / self.attention_mask.numel()


@dataclass(frozen=True)
class ModalityRuntime:
    """A modality as the data pipeline sees it: its spec, processor and size."""

    spec: ModalitySpec
    processor: Processor
    num_positions: int
    payload_shape: tuple[int, ...] | None  # of one item, what the processor returns (None: not declared)
    head_index: int  # NO_HEAD for input modalities

    @classmethod
    def of(cls, spec: ModalitySpec, options: Any, head_index: int) -> ModalityRuntime:
        """The runtime of `spec` configured with `options` (its recipe options)."""
        shape = tuple(spec.payload_shape(options)) if spec.payload_shape is not None else None
        return cls(spec, spec.build_processor(options), spec.num_positions(options), shape, head_index)

    def empty_payload(self) -> torch.Tensor | None:
        """A payload of no items, `(0, *payload_shape)`: what an absent modality's encoder
        runs on (None when the spec declares no payload shape)."""
        if self.payload_shape is None:
            return None
        return torch.empty((0, *self.payload_shape), dtype=self.spec.payload_dtype)


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)
    supervised: list[bool] = field(default_factory=list)
    media: list[tuple[str, Any, list[int], bool, bool]] = field(default_factory=list)  # (modality, payload, positions, encoded, variable)

    def add(self, ids: Sequence[int], tokens: Sequence[int], head: int, supervised: bool) -> list[int]:
        start = len(self.ids)
        self.ids += ids
        self.tokens += tokens
        self.heads += [head] * len(ids)
        self.supervised += [supervised] * len(ids)
        return list(range(start, len(self.ids)))

    def truncate(self, length: int) -> None:
        """Keep the first `length` positions (a segment boundary) and the items within."""
        del self.ids[length:], self.tokens[length:], self.heads[length:], self.supervised[length:]
        self.media = [item for item in self.media if item[2][-1] < length]


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
        packing: bool = False,
        every_modality: bool = False,
    ) -> None:
        """`limit_name` names `max_length` in errors (inference: the model's context).
        With `packing`, `__call__` packs the samples into as few rows of `max_length` as
        first-fit decreasing finds (`left_padded`, for decoding, never packs). With
        `every_modality` (training), `__call__` gives every modality absent from the
        batch a zero-item `MediaBatch`."""
        self.packing = packing
        self.every_modality = every_modality
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
        """Lay out one sample's positions (no padding); a sample over `max_length` is cut
        at its last `turn_ends` point that fits, or is a `DataError`."""
        row = _Row()
        row.add([self.bos_id], [self.bos_id], TEXT_HEAD, False)
        # Chat-format text joins the text that follows it before tokenizing, so the
        # tokens equal those of the whole prompt string tokenized at once.
        prefix = self._system_prompt(sample)
        separator = ""
        lengths = []  # positions after each segment: where the sample may be cut
        for segment in sample.segments:
            if isinstance(segment, Text):
                if not segment.text[:1].isspace():
                    prefix += separator
                if prefix and segment.supervised:
                    self._add_text(row, prefix, sample.drop_condition, False)
                    prefix = ""
                self._add_text(row, prefix + segment.text, sample.drop_condition, segment.supervised)
                prefix = separator = ""
            elif isinstance(segment, Media):
                if prefix + separator:
                    self._add_text(row, prefix + separator, sample.drop_condition, False)
                self._add_media(row, segment)
                prefix = ""
                separator = self.chat.media_separator if self._is_input(segment) and segment.payload is not None else ""
            else:
                raise DataError(f"sample from {sample.source or 'a data set'} has a segment of type {type(segment).__name__}")
            lengths.append(len(row.ids))
        if prefix + separator:
            self._add_text(row, prefix + separator, sample.drop_condition, False)
        if len(row.ids) > self.max_length:
            self._cut_to_fit(row, sample, lengths)
        return row

    def _system_prompt(self, sample: Sample) -> str:
        if sample.system_prompt is not None:
            return sample.system_prompt
        return self.chat.system_prompt if self._is_understanding_chat(sample) else ""

    def _cut_to_fit(self, row: _Row, sample: Sample, lengths: list[int]) -> None:
        """Drop whole turns from the end until the sample fits; at least one assistant
        turn stays, and no item is ever cut in half (cuts fall between segments)."""
        where = f"sample from {sample.source}" if sample.source else "the input"
        fitting = [lengths[end - 1] for end in sample.turn_ends if lengths[end - 1] <= self.max_length]
        if not fitting:
            first_turn = f"; its first assistant turn alone ends at token {lengths[sample.turn_ends[0] - 1]}" if sample.turn_ends else ""
            raise DataError(f"{where} is {len(row.ids)} tokens long, over {self.limit_name}={self.max_length}{first_turn}")
        row.truncate(fitting[-1])

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
        supervised = segment.supervised and spec.direction == "output"
        encoded = isinstance(segment.payload, Encoded)
        if encoded:
            payload = self._encoded_value(segment.payload, runtime, segment.modality)
        else:
            payload = segment.payload if isinstance(segment.payload, torch.Tensor) else runtime.processor(segment.payload)
        variable = isinstance(payload, VariableItem)
        layout = payload.layout if variable else (runtime.num_positions,)
        positions = []
        for part in layout:  # placeholders, with a variable item's special tokens between them
            if isinstance(part, str):
                token = self.token_id(part)
                row.add([token], [token], TEXT_HEAD, False)
            else:
                positions += row.add([placeholder] * part, [UNKNOWN_TOKEN] * part, runtime.head_index, supervised)
        row.media.append((segment.modality, payload.payload if variable else payload, positions, encoded, variable))
        if spec.end_token:
            end = self.token_id(spec.end_token)
            row.add([end], [end], TEXT_HEAD, False)

    @staticmethod
    def _encoded_value(item: Encoded, runtime: ModalityRuntime, modality: str) -> torch.Tensor:
        """A cached item's tensor, checked against the modality's size and kind."""
        value = item.value
        codes = runtime.spec.direction == "output"
        expected = f"codes ({runtime.num_positions},)" if codes else f"features ({runtime.num_positions}, D)"
        well_formed = value.ndim == 1 if codes else value.ndim == 2
        if not well_formed or value.shape[0] != runtime.num_positions or value.is_floating_point() == codes:
            raise DataError(
                f"modality {modality!r}: a cached item is {value.dtype} {tuple(value.shape)}, expected {expected}; "
                "it was prepared for another model (run `modal-core prepare` again with this recipe)"
            )
        return value.long() if codes else value

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        batch = self._collate(samples, self.padding_side, self.packing)
        # Zero-item payloads rather than FSDP2's own controls: it reduce-scatters only the
        # parameters that got a gradient (the root unit holding the encoders does not help),
        # and `unshard`/`reshard` by hand would match the gathers but not that (docs/multi-gpu.md).
        if self.every_modality:
            for name, runtime in self.modalities.items():
                empty = runtime.empty_payload()
                if empty is None:
                    continue
                if name not in batch.media:
                    absent = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
                    batch.media[name] = MediaBatch(empty, absent)
                elif batch.media[name].encoded:  # cached items skip the encoder: it runs on a stand-in
                    batch.media[name] = batch.media[name]._replace(stand_in=empty)
        return batch

    def left_padded(self, samples: Sequence[Sample]) -> Batch:
        """Collate with padding on the left, so every row's last position is real
        (what decoding needs). Never packed: each sample decodes in its own row."""
        return self._collate(samples, "left", pack=False)

    def _collate(self, samples: Sequence[Sample], padding_side: str, pack: bool) -> Batch:
        rows = []
        for sample in samples:
            try:
                rows.append(self.encode_sample(sample))
            except DataError as error:
                self.bad_samples.handle(sample.source or "a data set", error)
        if not rows:
            raise DataError(f"every one of the {len(samples)} samples of a batch was bad; see the bad-sample log")
        if pack:
            layout = first_fit_decreasing([len(row.ids) for row in rows], self.max_length)
        else:
            layout = [[index] for index in range(len(rows))]
        length = max(sum(len(rows[i].ids) for i in group) for group in layout)
        shape = (len(layout), length)
        # Each field is built as padded lists, then one tensor: a tensor per row costs more.
        names = ("ids", "tokens", "heads", "supervised", "attention", "positions", "sequences")
        fields: dict[str, list[list]] = {name: [] for name in names}
        payloads: dict[str, list[torch.Tensor]] = {}
        masks: dict[str, torch.Tensor] = {}
        encoded: dict[str, set[bool]] = {}
        variable: dict[str, set[bool]] = {}
        for b, group in enumerate(layout):
            pad = length - sum(len(rows[i].ids) for i in group)
            offset = pad if padding_side == "left" else 0
            line: dict[str, list] = {name: [] for name in fields}
            for number, index in enumerate(group):  # in row-major order, as `MediaBatch` wants its items
                row = rows[index]
                size = len(row.ids)
                line["ids"] += row.ids
                line["tokens"] += row.tokens
                line["heads"] += row.heads
                line["supervised"] += row.supervised
                line["attention"] += [1] * size
                line["positions"] += range(size)
                line["sequences"] += [number] * size
                for name, payload, positions, is_encoded, is_variable in row.media:
                    payloads.setdefault(name, []).append(payload)
                    encoded.setdefault(name, set()).add(is_encoded)
                    variable.setdefault(name, set()).add(is_variable)
                    mask = masks.setdefault(name, torch.zeros(shape, dtype=torch.bool))
                    mask[b, [offset + p for p in positions]] = True
                offset += size
            # Padding counts its positions from 0 and, in a packed row, is a sequence of its own,
            # so position ids restart at every sample and at the padding.
            padding = {
                "ids": [self.pad_id] * pad,
                "tokens": [UNKNOWN_TOKEN] * pad,
                "heads": [NO_HEAD] * pad,
                "supervised": [False] * pad,
                "attention": [0] * pad,
                "positions": list(range(pad)),
                "sequences": [len(group)] * pad,
            }
            for name, values in line.items():
                fields[name].append(padding[name] + values if padding_side == "left" else values + padding[name])
        for name, kinds in encoded.items():
            if len(kinds) > 1:
                raise DataError(
                    f"modality {name!r}: one batch mixes cached (`modal-core prepare`) and raw items; "
                    "prepare every data source that feeds this modality, or none"
                )
            if len(variable[name]) > 1:
                raise DataError(
                    f"modality {name!r}: one batch mixes items of varying size (its processor's `VariableItem`s) and fixed "
                    "payload tensors; give this modality raw items (paths, images) only"
                )
        cached = {name: True in kinds for name, kinds in encoded.items()}
        media = {
            name: MediaBatch(self._stack(name, items, cached[name], True in variable[name]), masks[name], cached[name])
            for name, items in payloads.items()
        }
        input_ids, token_ids, token_head, supervised, attention_mask, position_ids, sequence_ids = (torch.tensor(fields[n]) for n in names)
        tensors = (input_ids, attention_mask, position_ids, token_ids, token_head, supervised)
        return Batch(*tensors, media=media, sequence_ids=sequence_ids if pack else None)

    def _stack(self, name: str, items: list[torch.Tensor], cached: bool, variable: bool = False) -> torch.Tensor:
        """The items of one modality as one payload; processed ones are checked against
        the declared payload shape and dtype (cached ones were, by `_encoded_value`).
        Items of varying size (`variable`) are concatenated unit by unit."""
        if variable:
            items = list(torch.cat(items))  # one tensor per unit (tile), each of the declared shape
        shapes = {tuple(item.shape) for item in items}
        if len(shapes) > 1:
            raise DataError(
                f"modality {name!r}: items in one batch have different shapes {sorted(shapes)}; the processor must fix the size"
            )
        declared, spec = self.modalities[name].payload_shape, self.modalities[name].spec
        dtypes = {item.dtype for item in items}
        if not cached and declared is not None and (shapes != {declared} or dtypes != {spec.payload_dtype}):
            raise DataError(
                f"modality {name!r}: the processor returned {items[0].dtype} items of shape {tuple(items[0].shape)}, but its "
                f"ModalitySpec declares payload_shape {declared} and payload_dtype {spec.payload_dtype}; fix the plugin"
            )
        return torch.stack(items)
