"""`UnifiedModel`: one causal transformer, modalities spliced in as embeddings.

Reading order: embedding a batch (text embeddings, then each modality's adapter output
written at its placeholder positions), running the transformer, then the loss, where
each head scores only the positions whose next token it owns. There is no modality
branch here: input and output modalities differ only in what their encoder returns
(features or codes) and in having a head.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from modal_core.errors import ModelInputError, RecipeError

PARAMETER_GROUPS = ("backbone", "encoders", "adapters", "heads")

MediaInputs = Mapping[str, tuple[torch.Tensor, torch.Tensor, bool, torch.Tensor | None]]
"""Modality name -> (payload (n, ...) of its n items, mask (B, T) bool of the positions
their n * N embeddings fill, in row-major order, whether the payload is already the
encoder's output: codes (n, N) or features (n, N, D), as cached by `modal-core prepare`,
and for such a payload a zero-item raw payload (or None) the encoder runs on instead, so
that it takes part in every step of a sharded run)."""


@dataclass
class TransformerOutput:
    """Hidden states of the shared transformer and its KV cache (when asked for)."""

    hidden: torch.Tensor  # (B, T, hidden)
    cache: Any = None


@dataclass
class LossOutput:
    """Loss of a batch: the mean over all supervised positions, plus per-head sums."""

    loss: torch.Tensor
    head_loss_sums: dict[str, torch.Tensor]
    head_counts: dict[str, torch.Tensor]


def _cache_argument(base_model: nn.Module) -> str:
    """The name under which this transformers version takes a KV cache."""
    parameters = inspect.signature(type(base_model).forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"  # renamed in transformers 5.x


def packed_attention_arguments(sequence_ids: torch.Tensor) -> dict[str, Any]:
    """Backbone keyword arguments that confine attention to each packed sample.

    `sequence_ids` (B, T) numbers the samples of each row (padding is a sample of its
    own); the position ids restart at each sample. transformers (5.x) then builds the
    mask from the position-id resets when no 2-D `attention_mask` is given: a
    block-diagonal causal mask for SDPA, eager and flex attention. Flash-attention
    kernels read no mask; they get the same boundaries as the cumulative sequence
    lengths of the flattened batch (`cu_seq_lens_*`, `max_length_*`: its varlen path),
    which the other implementations ignore."""
    rows, length = sequence_ids.shape
    flat = (sequence_ids + torch.arange(rows, device=sequence_ids.device)[:, None] * (length + 1)).flatten()  # unique per row
    starts = torch.nonzero(flat[1:] != flat[:-1]).flatten() + 1
    edges = torch.tensor([0], device=flat.device), starts, torch.tensor([flat.numel()], device=flat.device)
    cumulative = torch.cat(edges).to(torch.int32)
    longest = cumulative.diff().max()
    return {
        "attention_mask": None,
        "cu_seq_lens_q": cumulative,
        "cu_seq_lens_k": cumulative,
        "max_length_q": longest,
        "max_length_k": longest,
    }


class UnifiedModel(nn.Module):
    """The shared autoregressive transformer with per-modality encoders, adapters and
    heads. `backbone` is a Hugging Face causal LM whose input embeddings and LM head
    serve text; `heads` holds one head per output modality."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        encoders: Mapping[str, nn.Module],
        adapters: Mapping[str, nn.Module],
        heads: Mapping[str, nn.Module],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.encoders = nn.ModuleDict(encoders)
        self.adapters = nn.ModuleDict(adapters)
        self.heads = nn.ModuleDict(heads)
        self.head_names = ["text", *sorted(heads)]
        self._cache_argument = _cache_argument(backbone.base_model)

    @property
    def hidden_size(self) -> int:
        """Width of the shared transformer."""
        return self.backbone.get_input_embeddings().embedding_dim

    def head_index(self, modality: str) -> int:
        """Index of a modality's head in `head_names` (what the collator writes)."""
        return self.head_names.index(modality)

    # -- embeddings -----------------------------------------------------------------
    def encode(self, modality: str, payload: torch.Tensor) -> torch.Tensor:
        """Encoder output of a payload batch: features (n, N, D) or codes (n, N).

        A payload of zero items runs the encoder on one all-zero stand-in item and keeps
        none of its output, so the encoder's parameters still take part in the step
        (with exactly zero gradient)."""
        # A stand-in rather than the empty batch itself: most encoders (Hugging Face
        # attention, patch grouping) reshape with -1, which zero items leave ambiguous.
        stand_in = payload.shape[0] == 0
        if stand_in:
            payload = payload.new_zeros((1, *payload.shape[1:]))
        encoder = self.encoders[modality]
        if any(p.requires_grad for p in encoder.parameters()):
            encoded = encoder.encode(payload)
        else:
            with torch.no_grad():  # frozen encoders need no activations kept
                encoded = encoder.encode(payload)
        return encoded[:0] if stand_in else encoded

    def embed_codes(self, modality: str, codes: torch.Tensor) -> torch.Tensor:
        """Input embeddings (…, hidden) of an output modality's codes."""
        return self.adapters[modality](codes)

    def embed(self, input_ids: torch.Tensor, token_ids: torch.Tensor, media: MediaInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Input embeddings (B, T, hidden) of token ids (B, T) with each modality's items
        written at its placeholder positions, and `token_ids` (B, T) with each output
        modality's codes filled in (the targets of their heads).

        A modality may come with zero items (a `(0, ...)` payload, see `encode`): it
        adds nothing to the embeddings, but its encoder and adapter run, so every
        process of a sharded run takes part in the same collectives. Modalities run in
        name order, the same order on every process."""
        embeds = self.backbone.get_input_embeddings()(input_ids)
        for modality, (payload, mask, already_encoded, stand_in) in sorted(media.items()):
            if already_encoded and stand_in is not None:
                self.encode(modality, stand_in)  # the encoder takes part in the step, as on processes with raw items
            encoded = payload if already_encoded else self.encode(modality, payload)
            item_embeds = self.adapters[modality](encoded)  # (n, N, hidden)
            expected = int(mask.sum())
            if item_embeds.shape[0] * item_embeds.shape[1] != expected:
                raise ModelInputError(
                    f"modality {modality!r}: {expected} placeholder positions but the encoder produced "
                    f"{item_embeds.shape[0]} x {item_embeds.shape[1]} embeddings; check num_positions against the encoder"
                )
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), item_embeds.to(embeds.dtype))
            if not encoded.is_floating_point():  # codes: they are also what the head must predict
                token_ids = token_ids.masked_scatter(mask, encoded.to(token_ids.dtype))
        return embeds, token_ids

    # -- transformer and heads --------------------------------------------------------
    def transformer(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values=None,
        use_cache: bool = False,
        sequence_ids: torch.Tensor | None = None,
    ):
        """Run the shared transformer: hidden states (B, T, hidden) and, with
        `use_cache`, the KV cache to pass back in as `past_key_values`.

        `sequence_ids` (B, T) marks packed rows (see `packed_attention_arguments`):
        each position then attends only to earlier positions of its own sample."""
        name = self._cache_argument
        cache = {name: past_key_values} if past_key_values is not None else {}
        attention = {"attention_mask": attention_mask} if sequence_ids is None else packed_attention_arguments(sequence_ids)
        output = self.backbone.base_model(
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            use_cache=use_cache,
            **attention,
            **cache,
        )
        return TransformerOutput(output.last_hidden_state, output[name] if use_cache else None)

    def head(self, name: str) -> nn.Module:
        """The head called `name` ("text" is the backbone's LM head)."""
        return self.backbone.get_output_embeddings() if name == "text" else self.heads[name]

    def logits(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        """Logits of head `name` for hidden states (…, hidden)."""
        return self.head(name)(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        token_ids: torch.Tensor,
        token_head: torch.Tensor,
        supervised: torch.Tensor,
        media: MediaInputs,
        sequence_ids: torch.Tensor | None = None,
    ) -> LossOutput:
        """Next-token loss of a batch: each head on its own supervised positions, summed
        over heads and divided by the number of supervised positions (no task weights).

        All tensors are (B, T): `token_ids` holds each position's token in its head's
        vocabulary (-1 where not known yet), `token_head` the index in `head_names` of
        the head that owns it, `supervised` whether it is a training target. Rows that
        hold several samples come with `sequence_ids` (which sample of the row each
        position belongs to) and `position_ids` restarting at each sample; attention
        stays inside each sample and no sample's last position predicts the next one's
        first token, so each sample's loss terms are those it has alone in a row."""
        embeds, token_ids = self.embed(input_ids, token_ids, media)
        hidden = self.transformer(embeds, attention_mask, position_ids, sequence_ids=sequence_ids).hidden
        hidden, targets, owners = hidden[:, :-1], token_ids[:, 1:], token_head[:, 1:]
        supervised = supervised[:, 1:] & attention_mask[:, 1:].bool()
        if sequence_ids is not None:
            supervised = supervised & (sequence_ids[:, 1:] == sequence_ids[:, :-1])
        sums, counts = {}, {}
        for index, name in enumerate(self.head_names):
            # Every head runs, on possibly zero positions, so all parameters take part in
            # every step (distributed data parallel needs that) without a host sync.
            selected = supervised & (owners == index)
            logits = self.logits(name, hidden[selected])
            sums[name] = F.cross_entropy(logits.float(), targets[selected], reduction="sum")
            counts[name] = selected.sum()
        total = torch.stack(list(counts.values())).sum().clamp(min=1)
        loss = torch.stack(list(sums.values())).sum() / total
        return LossOutput(loss, sums, counts)

    # -- parameter groups ---------------------------------------------------------------
    def parameter_groups(self) -> dict[str, nn.Module]:
        """Named groups a recipe can train or freeze: `backbone`, and `encoders.<m>`,
        `adapters.<m>`, `heads.<m>` for each modality."""
        groups: dict[str, nn.Module] = {"backbone": self.backbone}
        for kind in ("encoders", "adapters", "heads"):
            for name, module in getattr(self, kind).items():
                groups[f"{kind}.{name}"] = module
        return groups

    def set_trainable(self, train: list[str]) -> None:
        """Train exactly the named groups (`adapters` selects every adapter, …); freeze
        the rest and put frozen encoders in eval mode."""
        groups = self.parameter_groups()
        selected: set[str] = set()
        for item in train:
            matches = [name for name in groups if name == item or name.startswith(item + ".")]
            if not matches and item not in PARAMETER_GROUPS:
                raise RecipeError(f"train: unknown parameter group {item!r}; known: {sorted(set(PARAMETER_GROUPS) | set(groups))}")
            selected.update(matches)
        for name, module in groups.items():
            module.requires_grad_(name in selected)

    def train(self, mode: bool = True) -> UnifiedModel:
        """Like `nn.Module.train`, but frozen encoders stay in eval mode (no dropout,
        fixed normalisation statistics), as they were when they were trained."""
        super().train(mode)
        for encoder in self.encoders.values():
            if not any(p.requires_grad for p in encoder.parameters()):
                encoder.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that currently train."""
        return [p for p in self.parameters() if p.requires_grad]
