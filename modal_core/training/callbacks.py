"""Callbacks of the training loop: step checkpoints with retention, and a metrics log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from modal_core.checkpoints.run_folder import checkpoint_name
from modal_core.checkpoints.store import LAST_LINK
from modal_core.errors import RecipeError

BEST_LINK = "best"
"""Symbolic link in the checkpoints folder to the checkpoint with the best monitored metric."""
SCORES_FILE = "scores.json"
"""The monitored metric of each scored checkpoint, by directory name."""


@dataclass(frozen=True)
class Retention:
    """Which checkpoints survive besides the newest: the `keep_best` best by `monitor`."""

    keep_best: int = 0
    monitor: str = "val/loss"
    mode: str = "min"

    def ranked(self, scores: dict[str, float]) -> list[str]:
        """Checkpoint names, best first."""
        return sorted(scores, key=lambda name: scores[name], reverse=self.mode == "max")


class StepCheckpoint(L.Callback):
    """Save a checkpoint every `every_n_steps` optimizer steps, when training ends, and
    when the run is stopped by SIGTERM or Ctrl+C (after the batch in flight, so the
    checkpoint resumes exactly); point `last` at the newest and keep the newest
    `keep_last` (-1: all). With `retention.keep_best`, every validation scores the
    current step's checkpoint (saving it if needed), the best `keep_best` are kept too,
    and `best` points at the best."""

    # Lightning's ModelCheckpoint does not fit: keeping the newest N *and* the best K needs two
    # instances that prune each other's files, its `last` link is removed and re-made (not
    # atomic), and `save_on_exception` saves after any error, not only at a clean SIGTERM stop.

    def __init__(self, directory: Path, every_n_steps: int, keep_last: int, retention: Retention | None = None) -> None:
        self.directory = Path(directory)
        self.every_n_steps = every_n_steps
        self.keep_last = keep_last
        self.retention = retention or Retention()
        self._saved_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._saved_step:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self.save(trainer)
        # Every rank looks for `last` when fit returns; rank 0 points it after saving.
        trainer.strategy.barrier("modal_core_last_checkpoint")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning stops cleanly at the next batch boundary on SIGTERM; route the first
        # Ctrl+C there too (a second one interrupts at once).
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)

            def to_sigterm(signum, frame) -> None:
                signal.signal(signal.SIGINT, previous)
                os.kill(os.getpid(), signal.SIGTERM)

            signal.signal(signal.SIGINT, to_sigterm)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.retention.keep_best or trainer.global_step == 0:
            return
        value = trainer.callback_metrics.get(self.retention.monitor)
        if value is None:
            logged = sorted(trainer.callback_metrics)
            raise RecipeError(f"trainer.monitor: validation logged no {self.retention.monitor!r}; it logged {logged}")
        if trainer.global_step != self._saved_step:
            self.save(trainer)
        if trainer.is_global_zero:
            scores = self.scores()
            scores[checkpoint_name(trainer.global_step)] = float(value)
            _write_json_atomically(self.directory / SCORES_FILE, scores)
            self._prune()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.global_step != self._saved_step:
            path = self.save(trainer)
            if trainer.is_global_zero:
                print(f"stopped by a signal: saved {path}; continue with resume={self.directory.parent}")

    def save(self, trainer: L.Trainer) -> Path:
        """Write the checkpoint of the current step (every rank calls; rank 0 writes)."""
        path = self.directory / checkpoint_name(trainer.global_step)
        trainer.save_checkpoint(path, weights_only=False)  # full state: optimizer, loops, RNG (not about loading)
        self._saved_step = trainer.global_step
        if trainer.is_global_zero:
            self._point_last_at(path)
            self._prune()
        return path

    def scores(self) -> dict[str, float]:
        """The monitored metric of every scored checkpoint that still exists."""
        path = self.directory / SCORES_FILE
        scores = json.loads(path.read_text()) if path.is_file() else {}
        return {name: value for name, value in scores.items() if (self.directory / name).is_dir()}

    def _point_last_at(self, path: Path) -> None:
        _point_link(self.directory / LAST_LINK, path.name)

    def _prune(self) -> None:
        steps = sorted(p.name for p in self.directory.glob("step-*") if p.is_dir())
        keep = set(steps if self.keep_last < 0 else steps[-self.keep_last :])
        best = self.retention.ranked(self.scores())[: self.retention.keep_best]
        keep.update(best)
        for name in steps:
            if name not in keep:
                shutil.rmtree(self.directory / name, ignore_errors=True)
        if best:
            _point_link(self.directory / BEST_LINK, best[0])


def _point_link(link: Path, target: str) -> None:
    temporary = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if temporary.is_symlink():
        temporary.unlink()
    temporary.symlink_to(target)
    os.replace(temporary, link)  # atomic: the link always names a complete checkpoint


def _write_json_atomically(path: Path, data: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


class MetricsHistory(L.Callback):
    """Append the logged metrics of every `every_n_steps`-th step to a JSONL file
    (rank 0), the source of the training curves."""

    def __init__(self, path: Path, every_n_steps: int = 1) -> None:
        self.path = Path(path)
        self.every_n_steps = max(1, every_n_steps)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run logs again the steps after its checkpoint: drop the old records of those.
        if trainer.is_global_zero and trainer.global_step > 0 and self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= trainer.global_step]
            temporary = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            temporary.write_text("".join(f"{line}\n" for line in kept))
            os.replace(temporary, self.path)

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self._write(trainer, "train/")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._write(trainer, "val/", force=True)

    def _write(self, trainer: L.Trainer, prefix: str, force: bool = False) -> None:
        if not trainer.is_global_zero or (not force and trainer.global_step % self.every_n_steps):
            return
        metrics = {
            key: float(value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith(prefix) and isinstance(value, torch.Tensor)
        }
        if metrics:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": trainer.global_step, **metrics}) + "\n")
