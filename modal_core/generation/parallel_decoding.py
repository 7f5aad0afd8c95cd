"""Parallel decoding of an output modality's codes: several codes per forward pass.

`decoding` names the method (`decoding_method`), with an optional window after a colon:

- `ar`: one code per pass (the plain autoregressive loop);
- `sjd[:L]`: speculative Jacobi decoding (Teng et al., arXiv 2410.01699). A window of
  `L` draft codes (default `SJD_WINDOW`) follows the codes drawn so far; each pass
  feeds the last drawn code and the drafts, and reads the model's distribution p at
  every position of the window at once. Draft i, drawn from q, is accepted with
  probability min(1, p(x) / q(x)), in order; the first rejected one is redrawn from
  norm(max(0, p - q)) and the rest of the window is drafted anew from this pass's
  distributions (the Jacobi update). This is speculative sampling, so every code is
  distributed exactly as in autoregressive sampling (greedy: the same codes). The KV
  cache is rewound past the rejected drafts.
- `zipar[:w]`: ZipAR (He et al., arXiv 2412.04062). Row r + 1 of the code grid starts
  once row r has `w` codes (default half a row), so one pass draws a code in every
  started row: (H - 1) * w + W passes for an H x W grid instead of H * W. A code sees
  the codes drawn before it that precede it in raster order, at their raster
  positions; it is not lossless (a code misses the end of the row above), and with
  `w` = W it is the autoregressive loop.

Both run the conditional and unconditional rows of classifier-free guidance as one
doubled batch and all images of a call together: SJD accepts, in every image, as many
codes as the image that accepts fewest (the others' later drafts are drafted again),
which keeps one cache slot per position for the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from modal_core.errors import ModelInputError

SJD_WINDOW = 16
"""Draft codes per SJD pass (the paper's window)."""


Feed = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""Feed codes (n, Q) at raster places (Q,), kept (Q,), to both halves of the CFG batch;
returns the scores (n, Q, V) of the codes that follow each (see `_scores`)."""
Choose = Callable[[torch.Tensor], torch.Tensor]
"""A code per row of scores (rows, V): greedy or drawn with the call's generator."""


def zipar_schedule(height: int, width: int, window: int) -> list[tuple[list[int], list[int], list[bool], list[int]]]:
    """Per pass after the prefill: (codes to feed, their raster places, kept, raster
    places of the codes drawn from the outputs, one per fed code, -1 for none).

    Code (r, j) is drawn at pass r * w + j. A pass feeds the codes drawn in the pass
    before (each at its own raster place; its output draws its raster successor when
    that is due now) and, for a row that starts now while the code before its first
    one, (r - 1, W - 1), is not drawn yet, a stand-in: the newest code of row r - 1 at
    the raster place of (r - 1, W - 1), seen by nobody else."""
    if not 1 <= window <= width:
        raise ModelInputError(f"zipar window must be between 1 and the row length {width}, got {window}")
    due = {r * window + j: [] for r in range(height) for j in range(width)}
    for r in range(height):
        for j in range(width):
            due[r * window + j].append(r * width + j)
    passes = []
    for step in range(1, (height - 1) * window + width):
        fed, places, kept, drawn = [], [], [], []
        due_now = set(due.get(step, ()))
        for place in due.get(step - 1, ()):
            fed.append(place), places.append(place), kept.append(True)
            drawn.append(place + 1 if place + 1 in due_now else -1)
        for place in sorted(due_now):
            row, column = divmod(place, width)
            if column == 0 and (row - 1) * window + width - 1 >= step:  # (row - 1, W - 1) not drawn yet
                newest = (row - 1) * width + step - 1 - (row - 1) * window
                fed.append(newest), places.append(place - 1), kept.append(False), drawn.append(place)
        passes.append((fed, places, kept, drawn))
    return passes


def zipar_codes(codes: torch.Tensor, feed: Feed, choose: Choose, window: int | None) -> int:
    """Fill codes (n, N) whose first code is drawn, for a square grid; returns the passes run."""
    count, positions = codes.shape
    width = math.isqrt(positions)
    if width * width != positions:
        raise ModelInputError(f"zipar decodes a square grid of codes; this modality has {positions} positions")
    schedule = zipar_schedule(width, width, window or max(1, width // 2))
    device = codes.device
    for fed, places, kept, drawn in schedule:
        drawn_at = torch.tensor(drawn, device=device)
        scores = feed(codes[:, fed], torch.tensor(places, device=device), torch.tensor(kept, device=device))  # (n, Q, V)
        wanted = drawn_at >= 0
        picked = scores[:, wanted]  # (n, D, V)
        codes[:, drawn_at[wanted]] = choose(picked.flatten(0, 1)).view(count, -1)
    return 1 + len(schedule)


def sjd_codes(
    codes: torch.Tensor,
    first_scores: torch.Tensor,
    feed: Feed,
    choose: Choose,
    greedy: bool,
    generator: torch.Generator | None,
    window: int | None,
    cached_slots: Callable[[], int],
    rewind: Callable[[int], None],
) -> int:
    """Fill codes (n, N) whose first code was drawn from `first_scores` (n, V); returns
    the passes run. `cached_slots()` is the number of cache slots filled (the next
    feed's first slot); `rewind(length)` forgets the slots from `length` on."""
    count, positions = codes.shape
    window = window or SJD_WINDOW
    # Draft distributions q (n, L, V) of the codes after the drawn ones, and the drafts.
    draft_scores = first_scores[:, None].expand(count, window, -1)
    drafts = choose(draft_scores.flatten(0, 1)).view(count, window)
    drawn, passes = 1, 1
    every = torch.arange(window + 1, device=codes.device)
    kept = torch.ones_like(every, dtype=torch.bool)  # every fed code is kept (rejected ones are rewound)
    while drawn < positions:
        # Every pass feeds the whole window (a fixed shape: a compiled feed compiles once);
        # drafts past the last code (the last `window - ahead`) are scored, never accepted.
        ahead = min(window, positions - 1 - drawn)
        fed = torch.cat([codes[:, drawn - 1 : drawn], drafts], dim=1)  # (n, L + 1)
        first_slot = cached_slots()
        scores = feed(fed, every + (drawn - 1), kept)  # (n, L + 1, V)
        passes += 1
        accepted, fixes = _verify(scores, draft_scores, drafts, ahead, greedy, generator, choose)
        taken = int(accepted.min()) + 1  # codes drawn in every image this pass (one host sync)
        # Per image: its accepted drafts, then the code drawn where it stopped accepting.
        proposal = torch.where(every[:window] < accepted[:, None], drafts, fixes[:, :window])  # (n, L)
        proposal = torch.cat([proposal, fixes[:, window:]], dim=1)  # (n, L + 1)
        codes[:, drawn : drawn + taken] = proposal[:, :taken]
        # Kept: the last code drawn before and the accepted drafts fed after it.
        rewind(first_slot + taken)
        drawn += taken
        if drawn == positions:
            break
        # Jacobi update: positions this pass scored are drafted from its scores, later ones from its last.
        fresh = scores[:, taken:]
        draft_scores = torch.cat([fresh, scores[:, -1:].expand(count, window - fresh.shape[1], -1)], dim=1)
        drafts = choose(draft_scores.flatten(0, 1)).view(count, window)
    return passes


def _verify(
    scores: torch.Tensor,
    draft_scores: torch.Tensor,
    drafts: torch.Tensor,
    ahead: int,
    greedy: bool,
    generator: torch.Generator | None,
    choose: Choose,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling of one pass over a window of L drafts of which the first
    `ahead` may be accepted: (accepted drafts per image (n,), at most `ahead`, and per
    position (n, L + 1) the code drawn there when it is the first not accepted: from
    norm(max(0, p - q)) at a rejected draft, from p at or after position `ahead`)."""
    count, window = drafts.shape
    acceptable = torch.arange(window, device=drafts.device) < ahead  # (L,) drafts that may be accepted
    if greedy:  # scores are logits; q is a point mass on its argmax
        target = scores.argmax(dim=-1)  # (n, L + 1)
        accept = (drafts == target[:, :window]) & acceptable
        fixes = target
    else:
        new = scores[:, :window].gather(-1, drafts[..., None]).squeeze(-1)  # p(x) (n, L)
        old = draft_scores.gather(-1, drafts[..., None]).squeeze(-1)  # q(x) > 0: x was drawn from q
        uniform = torch.rand(new.shape, generator=generator, device=new.device)
        accept = (uniform * old < new) & acceptable
        residual = (scores[:, :window] - draft_scores).clamp_min(0)
        # Where p <= q everywhere (equal up to rounding) a draft is always accepted; keep p
        # there, and past the drafts that may be accepted.
        keep_p = (residual.sum(-1, keepdim=True) <= 0) | ~acceptable[:, None]
        residual = torch.where(keep_p, scores[:, :window], residual)
        fixes = choose(torch.cat([residual, scores[:, window:]], dim=1).flatten(0, 1)).view(count, window + 1)
    accepted = accept.long().cumprod(dim=-1).sum(dim=-1)  # (n,) leading accepted drafts
    return accepted, fixes
