"""Throughput logging: tokens per second over all ranks and model FLOPs utilisation.

Model FLOPs count the shared transformer and its heads (PaLM's accounting: 2 FLOPs per
weight per token forward, plus attention scores); encoders are not counted, so MFU is
a slight underestimate for image-heavy batches. The backward pass costs twice the
forward pass when the backbone trains, and once when it is frozen (gradients still
flow through it to the adapters).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from torch import nn

COMPUTE_DTYPES = {
    "32-true": torch.float32,
    "32": torch.float32,
    "bf16-mixed": torch.bfloat16,
    "bf16-true": torch.bfloat16,
    "16-mixed": torch.float16,
    "16-true": torch.float16,
}
"""The dtype the matrix products run in, per Lightning precision."""


def peak_flops(device: torch.device, precision: str, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device: the recipe's value, else Lightning's table of
    accelerators for the precision's compute dtype; None when unknown (then no MFU)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cpu":
        return None
    return get_available_flops(device, COMPUTE_DTYPES[precision])


@dataclass(frozen=True)
class FlopsModel:
    """Training FLOPs of a batch of the shared transformer."""

    matmul_params: int
    """Weights used in matrix products per token: every backbone weight but the input
    embedding table (a lookup), plus the heads."""
    layers: int
    hidden: int
    backward_factor: int
    """2 when the backbone trains (input and weight gradients), 1 when it is frozen."""

    @classmethod
    def of(cls, model: nn.Module) -> FlopsModel:
        """The counts for a `UnifiedModel`."""
        backbone = model.backbone
        embedding = backbone.get_input_embeddings().weight
        params = sum(p.numel() for p in backbone.parameters() if p is not embedding)
        params += sum(p.numel() for p in model.heads.parameters())
        trains = any(p.requires_grad for p in backbone.parameters())
        config = backbone.config
        return cls(params, config.num_hidden_layers, config.hidden_size, 2 if trains else 1)

    def batch_flops(self, tokens: int | torch.Tensor, sequence_length: int) -> float | torch.Tensor:
        """FLOPs of one training step on `tokens` real tokens (a number or a tensor) in rows of `sequence_length`."""
        forward_per_token = 2 * self.matmul_params + 4 * self.layers * self.hidden * sequence_length
        return (1 + self.backward_factor) * forward_per_token * tokens


class ThroughputMonitor(L.Callback):
    """Log `train/tokens_per_sec` (all ranks together, data loading included) and, when
    the device's peak is known, `train/mfu` (achieved model FLOP/s over the peak of all
    devices) at every `trainer.log_every_n_steps`-th optimizer step, over the steps since
    the previous one (the first window opens when the first step ends)."""

    # Lightning's ThroughputMonitor does not fit: it logs to loggers only (the run's history
    # records `callback_metrics`) and scales rank 0's count by the world size, while token
    # counts differ between ranks; its peak-FLOPs table (`get_available_flops`) is used.

    def __init__(self, flops: FlopsModel, precision: str, override_tflops: float | None = None) -> None:
        self.flops, self.precision, self.override_tflops = flops, precision, override_tflops
        self.peak: float | None = None
        self._tokens: torch.Tensor | int = 0
        self._model_flops: torch.Tensor | float = 0.0
        self._window_start: float | None = None
        self._step = -1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.peak = peak_flops(trainer.strategy.root_device, self.precision, self.override_tflops)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        # Counted on the device and read once per logged step: no host sync per batch.
        tokens = batch.attention_mask.sum(dtype=torch.float64)
        self._tokens = self._tokens + tokens
        self._model_flops = self._model_flops + self.flops.batch_flops(tokens, batch.input_ids.shape[1])
        if trainer.global_step == self._step:
            return  # inside gradient accumulation: the step is not over yet
        self._step = trainer.global_step
        if self._window_start is not None and trainer.global_step % trainer.log_every_n_steps:
            return  # counted into the next logged step's window
        now = time.perf_counter()
        if self._window_start is not None:
            totals = torch.stack([self._tokens, self._model_flops])  # float64, on the device
            tokens_all, flops_all = trainer.strategy.reduce(totals, reduce_op="sum").tolist()
            seconds = max(now - self._window_start, 1e-9)
            pl_module.log("train/tokens_per_sec", tokens_all / seconds, batch_size=1)
            if self.peak:
                pl_module.log("train/mfu", flops_all / seconds / (self.peak * trainer.world_size), batch_size=1)
        self._window_start = now
        self._tokens, self._model_flops = 0, 0.0
