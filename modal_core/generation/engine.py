"""`DecodeEngine`: fast decoding with a static KV cache and sampling on the device.

It draws the same tokens as `decoding.generate_codes` / `generate_text` for the same
seed, with less work per token:

- the KV cache is preallocated once (transformers `StaticCache`, reused across calls of
  the same shape), so no step grows or copies a tensor;
- the attention mask covers every cache slot from the start; a step only switches its
  own slot on (one in-place write), instead of concatenating a column to the mask;
- a step attends over the filled slots only (a view of the cache), not the whole
  preallocated length (a compiled step is dynamic in that length);
- positions and the cache slot live on the device and advance in place;
- a token is drawn with the exponential race `argmax(p / E)`, exactly what
  `torch.multinomial` computes for one sample, minus the validity check that reads the
  probabilities back to the host; text stops are checked once every
  `STOP_CHECK_INTERVAL` tokens, not after each;
- on a CPU, linear layers compute the few rows of a step with `skinny_linear` (a native
  AVX2 kernel, else `(W @ x.T).T`), which streams float32 weights 2-4x as fast as
  `F.linear`;
- one step (embed, transformer, head, guidance, filters) can be `torch.compile`d.

Image generation runs conditional and unconditional rows as one doubled batch
(conditional rows first), as the plain loop does. Attention is the backbone's SDPA.
`generate_codes(..., decoding="sjd" | "zipar")` draws several codes per forward pass
(`parallel_decoding`) through `DecodeWorkspace.feed` (several positions per row, each
at its raster place) and `rewind` (forget rejected drafts' cache slots).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from transformers import StaticCache

from modal_core.data.collator import Batch, Collator
from modal_core.data.segments import Sample
from modal_core.errors import ModelInputError
from modal_core.generation.decoding import cut_at_stops, image_prompt_batch, seeded_generator, text_prompt_batch
from modal_core.generation.decoding_method import DecodingMethod
from modal_core.generation.parallel_decoding import SJD_WINDOW, sjd_codes, zipar_codes
from modal_core.generation.sampling import Guidance, filtered_logits, guided_logits
from modal_core.generation.skinny_linear import SkinnyLinears, skinny_available
from modal_core.model.unified import UnifiedModel

CAPACITY_ROUNDING = 64
"""Cache lengths are rounded up to a multiple of this, so prompts of nearby lengths
share one workspace (and one compiled step)."""
STOP_CHECK_INTERVAL = 16
"""Text decoding asks the device whether every row has stopped once per this many tokens."""


class CacheCapacityError(ModelInputError):
    """A decode step would write past the end of the preallocated KV cache."""


def draw_tokens(probabilities: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One category per row of `probabilities` (B, V), without a host synchronisation.

    For one sample `torch.multinomial` races exponential clocks, `argmax(p / E)` with
    `E ~ Exp(1)`, after checking the probabilities on the host; this is the same race on
    the same random stream (so the same tokens for the same generator state), without
    the check."""
    race = torch.empty_like(probabilities).exponential_(1, generator=generator)  # (B, V)
    return (probabilities / race).argmax(dim=-1)


class FilledSpanCache(StaticCache):
    """A `StaticCache` whose `update` hands attention the first `span` slots only (the
    filled ones), so a decode step reads no empty slots; None hands it all of them."""

    span: int | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write the new states, return the keys and values (R, heads, span, dim) attention reads."""
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        if self.span is None:
            return keys, values
        return keys[:, :, : self.span], values[:, :, : self.span]


class DecodeWorkspace:
    """Preallocated state of one decode run of `rows` sequences: a static KV cache of
    `capacity` slots, the mask of the slots each row's next query sees, positions."""

    def __init__(self, model: UnifiedModel, rows: int, capacity: int, device: torch.device) -> None:
        self.rows, self.capacity = rows, capacity
        self.cache = FilledSpanCache(config=model.backbone.config, max_cache_len=capacity)
        self.visible = torch.zeros((rows, 1, 1, capacity), dtype=torch.bool, device=device)  # (R, 1, 1, C)
        self.position = torch.zeros((rows, 1), dtype=torch.long, device=device)  # (R, 1) of the next query
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # cache slot of the next query
        self.length = 0  # host copy of `slot`, for the capacity check without a sync
        # For `feed`: each slot's place in the output's raster order (-1 for the prompt), and the
        # position of the output's first code.
        self.order = torch.full((capacity,), -1, dtype=torch.long, device=device)  # (C,)
        self.start = torch.zeros((rows, 1), dtype=torch.long, device=device)  # (R, 1)

    def prefill(self, model: UnifiedModel, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Run the left-padded prompt (R, T, hidden) into an empty cache; returns the
        last position's hidden state (R, hidden)."""
        rows, length = attention_mask.shape
        self.length = 0
        self._reserve(length)
        self.cache.reset()
        self.cache.span = None
        device = embeds.device
        keys = attention_mask.bool()  # (R, T)
        causal = torch.ones((length, length), dtype=torch.bool, device=device).tril()
        # A padding query sees itself, so no softmax row is empty (NaN); real queries never see padding.
        own = torch.eye(length, dtype=torch.bool, device=device)
        mask = torch.zeros((rows, 1, length, self.capacity), dtype=torch.bool, device=device)  # (R, 1, T, C)
        mask[:, 0, :, :length] = (keys[:, None, :] & causal) | own
        hidden = model.transformer(embeds, mask, position_ids, past_key_values=self.cache, use_cache=True).hidden
        self.visible.zero_()
        self.visible[:, 0, 0, :length] = keys
        self.position.copy_(position_ids[:, -1:] + 1)
        self.start.copy_(self.position)
        self.order.fill_(-1)
        self.slot.fill_(length)
        return hidden[:, -1]

    def advance(self, model: UnifiedModel, embeds: torch.Tensor) -> torch.Tensor:
        """Feed one position (R, hidden) per row; returns its hidden state (R, hidden).
        Only in-place updates of preallocated tensors and views of them: safe to compile."""
        self.visible.index_fill_(-1, self.slot, True)
        self.cache.span = self.length  # the filled slots, this step's included (`reserve_step` counted it)
        visible = self.visible[..., : self.length]
        hidden = model.transformer(embeds[:, None], visible, self.position, past_key_values=self.cache, use_cache=True).hidden
        self.slot.add_(1)
        self.position.add_(1)
        return hidden[:, -1]

    def feed(self, model: UnifiedModel, embeds: torch.Tensor, order: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Feed several codes per row at once, into the next Q slots: embeds (R, Q, hidden)
        of the codes at raster places `order` (Q,) of the output. A query sees the prompt,
        the kept slots of lower raster place (earlier feeds' and this feed's) and itself;
        a slot not `kept` (Q,) is seen by its own query only (a stand-in for a code not
        drawn yet). Returns the hidden states (R, Q, hidden). The caller reserved the Q
        slots (`reserve`); the order of slots need not be the raster order."""
        start = self.length - order.shape[0]
        slots = slice(start, self.length)
        self.order[slots] = order
        self.visible[:, 0, 0, slots] = kept
        self.cache.span = self.length
        earlier = self.order[None, : self.length] < order[:, None]  # (Q, span)
        own = torch.zeros_like(earlier)
        own[:, slots] = torch.eye(order.shape[0], dtype=torch.bool, device=order.device)
        mask = (self.visible[..., : self.length] & earlier) | own  # (R, 1, Q, span)
        hidden = model.transformer(embeds, mask, self.start + order, past_key_values=self.cache, use_cache=True).hidden
        self.slot.fill_(self.length)
        return hidden

    def rewind(self, length: int) -> None:
        """Forget every cached slot from `length` on: the next feed overwrites them (a
        rejected draft's keys and values are never seen again)."""
        self.visible[..., length:] = False
        self.order[length:] = -1
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(length)
        self.slot.fill_(length)
        self.length = length

    def reserve(self, positions: int) -> None:
        """Account for `positions` more cached slots, or raise `CacheCapacityError`."""
        self._reserve(positions)

    def reserve_step(self) -> None:
        """Account for one more cached position, or raise `CacheCapacityError`."""
        self._reserve(1)

    def _reserve(self, positions: int) -> None:
        if self.length + positions > self.capacity:
            raise CacheCapacityError(
                f"the static KV cache holds {self.capacity} positions per row; {self.length} are used and "
                f"{positions} more were asked for; build the workspace with a larger capacity"
            )
        self.length += positions


def _scores(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """What a token is chosen from: the logits themselves when greedy, else the
    probabilities after temperature, top-k and top-p (as `sample_tokens` computes them)."""
    if temperature == 0:
        return logits
    return filtered_logits(logits, temperature, top_k, top_p).softmax(dim=-1)


def _choose(scores: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    return scores.argmax(dim=-1) if temperature == 0 else draw_tokens(scores, generator)


def _image_scores(
    model: UnifiedModel, modality: str, hidden: torch.Tensor, scale: torch.Tensor, plausibility: float | None, sampling: tuple
) -> torch.Tensor:
    """Scores (n, V) of the next code from the doubled batch's hidden states (2n, hidden),
    guided with the 0-dim `scale` (a tensor: a schedule's changing value recompiles nothing)."""
    logits = model.logits(modality, hidden)  # (2n, V)
    count = hidden.shape[0] // 2
    return _scores(guided_logits(logits[:count], logits[count:], scale, plausibility), *sampling)


def _image_step(
    model: UnifiedModel,
    workspace: DecodeWorkspace,
    modality: str,
    codes: torch.Tensor,
    scale: torch.Tensor,
    plausibility: float | None,
    sampling: tuple,
) -> torch.Tensor:
    """Feed the last codes (n,) to both halves of the batch; scores of the next ones (n, V)."""
    hidden = workspace.advance(model, model.embed_codes(modality, codes.repeat(2)))
    return _image_scores(model, modality, hidden, scale, plausibility, sampling)


def _feed_scores(
    model: UnifiedModel,
    workspace: DecodeWorkspace,
    modality: str,
    codes: torch.Tensor,
    order: torch.Tensor,
    kept: torch.Tensor,
    scales: torch.Tensor,
    plausibility: float | None,
    sampling: tuple,
) -> torch.Tensor:
    """Feed codes (n, Q) at raster places `order` (Q,) to both halves of the batch
    (`DecodeWorkspace.feed`); scores (n, Q, V) of the code after each, that code's
    place guided with its scale of `scales` (N,)."""
    count, fed = codes.shape
    hidden = workspace.feed(model, model.embed_codes(modality, codes.repeat(2, 1)), order, kept)  # (2n, Q, hidden)
    logits = model.logits(modality, hidden)  # (2n, Q, V)
    scale = scales[(order + 1).clamp(max=scales.shape[0] - 1)][:, None]  # (Q, 1): the code after each fed one
    guided = guided_logits(logits[:count], logits[count:], scale, plausibility).flatten(0, 1)
    return _scores(guided, *sampling).view(count, fed, -1)


def _text_step(model: UnifiedModel, workspace: DecodeWorkspace, tokens: torch.Tensor, sampling: tuple) -> torch.Tensor:
    """Feed the last text tokens (B,); scores of the next ones (B, V)."""
    hidden = workspace.advance(model, model.backbone.get_input_embeddings()(tokens))
    return _scores(model.logits("text", hidden), *sampling)


class DecodeEngine:
    """Fast decoding for a `UnifiedModel` in eval mode, for both kinds of head.

    `compile_mode`: None runs eagerly; otherwise one decode step is compiled with
    `torch.compile(mode=compile_mode)` ("default", "reduce-overhead", "max-autotune").
    `skinny_linears`: compute the linear layers of a step with `skinny_linear`; None
    does so when the model is float32 on a CPU, the case where it was measured to win.
    Tokens then equal the plain loops' up to float rounding of the logits.
    Workspaces are kept per (rows, capacity), so repeated calls of the same shape
    neither allocate a cache nor recompile."""

    def __init__(self, model: UnifiedModel, compile_mode: str | None = None, skinny_linears: bool | None = None) -> None:
        self.model = model
        self.skinny_linears = skinny_linears
        self._skinny = SkinnyLinears(model)
        self._workspaces: dict[tuple[int, int], DecodeWorkspace] = {}
        self.passes = 0  # forward passes of the last `generate_codes` call, its prefill included
        self._image_step: Callable[..., torch.Tensor] = _image_step
        self._text_step: Callable[..., torch.Tensor] = _text_step
        self._feed_scores: Callable[..., torch.Tensor] = _feed_scores
        if compile_mode is not None:
            self._image_step = torch.compile(_image_step, mode=compile_mode, dynamic=None)
            self._feed_scores = torch.compile(_feed_scores, mode=compile_mode, dynamic=None)
            self._text_step = torch.compile(_text_step, mode=compile_mode, dynamic=None)

    def workspace(self, rows: int, positions: int) -> DecodeWorkspace:
        """A workspace for `rows` sequences of up to `positions` cached positions
        (rounded up to `CAPACITY_ROUNDING`), reused when one of that shape exists."""
        capacity = -(-positions // CAPACITY_ROUNDING) * CAPACITY_ROUNDING
        key = (rows, capacity)
        if key not in self._workspaces:
            self._workspaces[key] = DecodeWorkspace(self.model, rows, capacity, self._device)
        return self._workspaces[key]

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextmanager
    def _linear_layers(self) -> Iterator[None]:
        weight = next(self.model.parameters())
        skinny = self.skinny_linears if self.skinny_linears is not None else skinny_available(weight.device, weight.dtype)
        with self._skinny.active() if skinny else nullcontext():
            yield

    def _prefill(self, batch: Batch, new_positions: int) -> tuple[DecodeWorkspace, torch.Tensor]:
        batch = batch.to(self._device)
        rows, length = batch.input_ids.shape
        workspace = self.workspace(rows, length + new_positions)
        embeds, _ = self.model.embed(batch.input_ids, batch.token_ids, batch.media)
        return workspace, workspace.prefill(self.model, embeds, batch.attention_mask, batch.position_ids)

    @torch.no_grad()
    def generate_codes(
        self,
        collator: Collator,
        prompts: Sequence[Sample],
        modality: str,
        num_positions: int,
        images_per_prompt: int = 1,
        cfg_scale: float = 5.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = 0,
        decoding: str | DecodingMethod = "ar",
        cfg_schedule: str = "constant",
        cfg_plausibility: float | None = None,
    ) -> torch.Tensor:
        """Codes (len(prompts) * images_per_prompt, N) of an output modality, row r
        belonging to prompt r // images_per_prompt. With `decoding="ar"` the same as
        `decoding.generate_codes` with the same arguments (up to float rounding of the
        logits with skinny linears); "sjd" and "zipar" draw several codes per pass
        (`parallel_decoding`: SJD is distributed as "ar" and greedy gives its codes).
        `self.passes` is then the number of forward passes the call ran.
        `cfg_schedule` and `cfg_plausibility`: see `sampling.Guidance`."""
        sampling = (temperature, top_k, top_p)
        method = decoding if isinstance(decoding, DecodingMethod) else DecodingMethod.parse(decoding)
        guidance = Guidance(cfg_scale, cfg_schedule, cfg_plausibility)
        count, batch = image_prompt_batch(self.model, collator, prompts, num_positions, images_per_prompt, guidance, sampling)
        with self._linear_layers():
            return self._decode_codes(batch, count, modality, num_positions, guidance, sampling, seed, method)

    def _decode_codes(
        self,
        batch: Batch,
        count: int,
        modality: str,
        num_positions: int,
        guidance: Guidance,
        sampling: tuple,
        seed: int | None,
        method: DecodingMethod,
    ) -> torch.Tensor:
        """Codes (n, N) for the doubled CFG batch of n conditional rows."""
        temperature = sampling[0]
        # The last code is drawn, never fed back: N - 1 positions beyond the prompt (ZipAR
        # also feeds a stand-in at the start of each row but the first; SJD's last pass
        # feeds a whole window of drafts).
        extra = {"zipar": math.isqrt(num_positions), "sjd": method.window or SJD_WINDOW}.get(method.method, 0)
        workspace, hidden = self._prefill(batch, num_positions - 1 + extra)
        generator = seeded_generator(seed, self._device)
        codes = torch.empty((count, num_positions), dtype=torch.long, device=self._device)  # (n, N)
        scales = guidance.scales(num_positions, self._device)
        plausibility = guidance.plausibility
        first_scores = _image_scores(self.model, modality, hidden, scales[0], plausibility, sampling)
        codes[:, 0] = _choose(first_scores, temperature, generator)
        if method.method != "ar":
            guided = (scales, plausibility)
            self.passes = self._parallel_codes(workspace, codes, first_scores, modality, guided, sampling, generator, method)
            return codes
        self.passes = num_positions
        for index in range(1, num_positions):
            workspace.reserve_step()
            scores = self._image_step(self.model, workspace, modality, codes[:, index - 1], scales[index], plausibility, sampling)
            codes[:, index] = _choose(scores, temperature, generator)
        return codes

    def _parallel_codes(
        self,
        workspace: DecodeWorkspace,
        codes: torch.Tensor,
        first_scores: torch.Tensor,
        modality: str,
        guidance: tuple[torch.Tensor, float | None],
        sampling: tuple,
        generator: torch.Generator | None,
        method: DecodingMethod,
    ) -> int:
        """Fill codes (n, N) after the first with SJD or ZipAR; returns the passes run.
        `guidance`: the scale of each code (N,) and the plausibility constraint."""
        temperature = sampling[0]

        def feed(fed: torch.Tensor, order: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
            workspace.reserve(fed.shape[1])
            return self._feed_scores(self.model, workspace, modality, fed, order, kept, *guidance, sampling)

        def choose(scores: torch.Tensor) -> torch.Tensor:
            return _choose(scores, temperature, generator)

        if method.method == "zipar":
            return zipar_codes(codes, feed, choose, method.window)
        return sjd_codes(
            codes, first_scores, feed, choose, temperature == 0, generator, method.window, lambda: workspace.length, workspace.rewind
        )

    @torch.no_grad()
    def generate_text(
        self,
        collator: Collator,
        prompts: Sequence[Sample],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = 0,
        stop_ids: Sequence[int] = (),
    ) -> list[list[int]]:
        """New text token ids for each prompt, cut at the first stop token (excluded);
        the same as `decoding.generate_text` with the same arguments (up to float
        rounding of the logits with skinny linears)."""
        sampling = (temperature, top_k, top_p)
        batch = text_prompt_batch(self.model, collator, prompts, max_new_tokens, sampling)
        with self._linear_layers():
            tokens = self._decode_text(batch, max_new_tokens, sampling, seed, stop_ids)
        return cut_at_stops(tokens, stop_ids)

    def _decode_text(self, batch: Batch, max_new_tokens: int, sampling: tuple, seed: int | None, stop_ids: Sequence[int]) -> torch.Tensor:
        """Token ids (B, produced), stop tokens included."""
        temperature = sampling[0]
        workspace, hidden = self._prefill(batch, max_new_tokens - 1)
        device = self._device
        generator = seeded_generator(seed, device)
        stops = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
        rows = batch.input_ids.shape[0]
        tokens = torch.empty((rows, max_new_tokens), dtype=torch.long, device=device)  # (B, new)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        tokens[:, 0] = _choose(_scores(self.model.logits("text", hidden), *sampling), temperature, generator)
        produced = 1
        while produced < max_new_tokens:
            finished |= torch.isin(tokens[:, produced - 1], stops)
            if produced % STOP_CHECK_INTERVAL == 0 and bool(finished.all()):
                break
            workspace.reserve_step()
            scores = self._text_step(self.model, workspace, tokens[:, produced - 1], sampling)
            tokens[:, produced] = _choose(scores, temperature, generator)
            produced += 1
        return tokens[:, :produced]
