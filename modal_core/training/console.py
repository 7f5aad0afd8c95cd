"""What a training run prints: our progress bar in optimizer steps, and none of
Lightning's start-up chatter (accelerator lines, advertisements, a known deprecation)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
"""Where Lightning logs "GPU available: ...", its tips and "`Trainer.fit` stopped"; its warnings still show."""


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block, Lightning's informational lines are not printed; levels and
    warning filters are restored afterwards."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        # Lightning's own use of a torch API torch deprecated; nothing a user can act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting optimizer steps, `step N/max_steps` (a resumed run
    starts at its step), instead of the batches of an epoch: the task mix is one endless
    stream, so Lightning's own bar reads `Epoch 0/-2`."""

    @property
    def train_description(self) -> str:
        return "step"

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.n = trainer.global_step
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if not self._should_update(step, trainer.max_steps) or bar.n == step:
            return
        if step % trainer.log_every_n_steps == 0:  # the metrics change on logged steps only
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.update(step - bar.n)  # redraws at most every `mininterval` (0.1 s), not at every step
