"""`UnifiedTrainingModule`: the only training loop. Stages differ by data and by which
parameter groups train, never by code."""

from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch

from modal_core.data.collator import Batch
from modal_core.errors import RecipeError
from modal_core.model.unified import LossOutput, UnifiedModel
from modal_core.scale.fsdp import FullyShardedStrategy
from modal_core.training.schedule import configure_adamw

RNG_KEY = "modal_core_rng"


class RngStateMixin:
    """Saves and restores the Python, NumPy and torch random states with a checkpoint,
    so a resumed run draws the same random numbers as an uninterrupted one."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": _numpy_state_as_tensors(np.random.get_state()),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get(RNG_KEY)
        if state:
            torch.set_rng_state(state["torch"])
            python_state = state["python"]
            random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
            name, keys, *rest = state["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def _numpy_state_as_tensors(state: tuple) -> tuple:
    """NumPy's generator state with its key array as a tensor: sharded checkpoints keep
    this state in a file read with `torch.load(weights_only=True)`, which refuses arrays."""
    name, keys, *rest = state
    return (name, torch.from_numpy(keys.astype(np.int64)), *rest)


class UnifiedTrainingModule(RngStateMixin, L.LightningModule):
    """Trains a `UnifiedModel` with AdamW and a warm-up schedule, logging loss, per-head
    loss, learning rate and the share of padding positions in the batch."""

    def __init__(self, model: UnifiedModel, train: list[str], optim: dict, total_steps: int) -> None:
        """`optim` holds `configure_adamw` keyword arguments (the recipe's `optim` block)."""
        super().__init__()
        self.model = model
        self.model.set_trainable(train)
        self.optim, self.total_steps = dict(optim), total_steps

    def configure_model(self) -> None:
        """Lightning's hook to parallelise the model once processes exist: FSDP2 shards it here."""
        if isinstance(self.trainer.strategy, FullyShardedStrategy):
            self.trainer.strategy.shard(self.model)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        output = self.model(**batch.model_inputs())
        loss, global_loss = self._global_token_mean(output)
        if self._is_logged_step():
            self._log_losses(output, global_loss, batch)
        return loss  # tokens/s and MFU: modal_core.scale.throughput.ThroughputMonitor

    def _is_logged_step(self) -> bool:
        """Whether this batch belongs to an optimizer step the run's history records (every
        `trainer.log_every_n_steps`-th). Only those log: Lightning's `log` costs about a
        millisecond a value, and skipping a head without positions reads its count on the host."""
        return (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0

    def _log_losses(self, output: LossOutput, global_loss: torch.Tensor, batch: Batch) -> None:
        batch_size = batch.input_ids.shape[0]
        self.log("train/loss", global_loss, prog_bar=True, batch_size=batch_size)
        for name, total in output.head_loss_sums.items():
            count = output.head_counts[name]
            if count > 0:
                self.log(f"train/loss_{name}", total / count, batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        self.log("train/padding_fraction", batch.padding_fraction, batch_size=batch_size)

    def _global_token_mean(self, output: LossOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss to back-propagate, its value over all ranks): the mean over the
        supervised positions of every rank's batch. Data-parallel strategies average
        gradients over ranks, so the local sum is divided by the global count times the
        world size; the gradient is then that of one process reading the whole global
        batch, even when ranks' batches hold different numbers of supervised positions."""
        local_sum = torch.stack(list(output.head_loss_sums.values())).sum()
        local_count = torch.stack(list(output.head_counts.values())).sum().to(local_sum.dtype)
        global_sum, global_count = self.trainer.strategy.reduce(torch.stack([local_sum.detach(), local_count]), reduce_op="sum")
        global_count = global_count.clamp(min=1)
        return local_sum / global_count * self.trainer.world_size, global_sum / global_count

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        output = self.model(**batch.model_inputs())
        self.log("val/loss", output.loss, prog_bar=True, batch_size=batch.input_ids.shape[0])

    def configure_optimizers(self):
        parameters = self.model.trainable_parameters()
        if not parameters:
            raise RecipeError("no parameter trains: the recipe's `train:` list selects nothing in this model")
        return configure_adamw(parameters, self.total_steps, **self.optim)
