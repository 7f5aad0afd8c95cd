"""Training a modality's own tokenizer (e.g. the VQ image tokenizer) before the
unified model uses it. The tokenizer defines its objective: `loss(payload)` returns a
dict with the total under `loss` and any other scalars worth logging."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn

from modal_core.data.bad_samples import BadSamplePolicy
from modal_core.data.collator import ModalityRuntime
from modal_core.data.segments import Media, Sample
from modal_core.errors import DataError, RecipeError
from modal_core.training.module import RngStateMixin
from modal_core.training.schedule import configure_adamw


class PayloadCollator:
    """Stacks the processed payloads of one modality's media items into a batch; an item
    that cannot be processed goes to the bad-sample policy (raise, or skip and log)."""

    def __init__(self, name: str, runtime: ModalityRuntime, bad_samples: BadSamplePolicy | None = None) -> None:
        self.name, self.runtime = name, runtime
        self.bad_samples = bad_samples or BadSamplePolicy()

    def __call__(self, samples: Sequence[Sample]) -> torch.Tensor:
        payloads = []
        for sample in samples:
            for segment in sample.segments:
                if isinstance(segment, Media) and segment.modality == self.name and segment.payload is not None:
                    payload = segment.payload
                    try:
                        payloads.append(payload if isinstance(payload, torch.Tensor) else self.runtime.processor(payload))
                    except DataError as error:
                        self.bad_samples.handle(sample.source or "a data set", error)
        if not payloads:
            raise DataError(f"a batch holds no {self.name!r} media; the data sources must provide them to train its tokenizer")
        return torch.stack(payloads)


class ModalityTokenizerModule(RngStateMixin, L.LightningModule):
    """Trains `tokenizer` (kept as `self.model`, so checkpoints hold its weights alone)."""

    def __init__(self, tokenizer: nn.Module, optim: dict, total_steps: int) -> None:
        """`optim` holds `configure_adamw` keyword arguments (the recipe's `optim` block)."""
        super().__init__()
        if not callable(getattr(tokenizer, "loss", None)):
            raise RecipeError(f"{type(tokenizer).__name__} has no loss(payload) method: this modality's tokenizer cannot be trained")
        self.model = tokenizer
        self.optim, self.total_steps = dict(optim), total_steps

    def training_step(self, payload: torch.Tensor, batch_idx: int) -> torch.Tensor:
        losses = self.model.loss(payload)
        for key, value in losses.items():
            self.log(f"train/{key}", value, prog_bar=key == "loss", batch_size=payload.shape[0])
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=payload.shape[0])
        return losses["loss"]

    def validation_step(self, payload: torch.Tensor, batch_idx: int) -> None:
        for key, value in self.model.loss(payload).items():
            self.log(f"val/{key}", value, prog_bar=key == "loss", batch_size=payload.shape[0])

    def configure_optimizers(self):
        return configure_adamw(list(self.model.parameters()), self.total_steps, **self.optim)
