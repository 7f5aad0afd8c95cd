"""The understanding guard: an evaluator suite scored at the start of preference tuning
and every N steps; a drop of its metric beyond a margin stops the run (or is reported).

Each score is appended to `guard.jsonl` in the run folder (`step`, the metric, its
drop from the start, whether the margin was exceeded) and logged as `train/guard_<metric>`;
each evaluation's own files go to `guard/step-NNNNNN/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L

from modal_core.checkpoints.run_folder import is_first_process
from modal_core.errors import EvaluationError

GUARD_FILE = "guard.jsonl"
GUARD_DIR = "guard"


class UnderstandingGuard(L.Callback):
    """Scores `evaluate(pipeline, options, out_dir)` with a pipeline over the model
    being tuned (`pipeline_of(model)`) at the start and every `every_n_steps` steps."""

    def __init__(
        self,
        evaluate: Callable[..., dict],
        options: dict[str, Any],
        metric: str,
        every_n_steps: int,
        margin: float,
        stop: bool,
        run_dir: Path,
        pipeline_of: Callable[[Any], Any],
    ) -> None:
        self.evaluate, self.options, self.metric = evaluate, dict(options), metric
        self.every_n_steps, self.margin, self.stop = every_n_steps, margin, stop
        self.run_dir, self.pipeline_of = Path(run_dir), pipeline_of
        self.start: float | None = None
        self.exceeded = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self._score(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0:
            self._score(trainer, pl_module)

    def _score(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        step = trainer.global_step
        out_dir = self.run_dir / GUARD_DIR / f"step-{step:06d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        model = pl_module.model
        was_training = model.training
        try:
            result = self.evaluate(self.pipeline_of(model), self.options, out_dir)
        finally:
            model.train(was_training)
        if not isinstance(result.get(self.metric), (int, float)):
            raise EvaluationError(f"preference.guard.metric: the suite's result has no number {self.metric!r}; it has {sorted(result)}")
        value = float(result[self.metric])
        start = value if self.start is None else self.start
        drop = start - value
        self.exceeded = drop > self.margin
        record = {"step": step, self.metric: value, "drop": drop, "margin_exceeded": self.exceeded}
        if is_first_process():
            with (self.run_dir / GUARD_FILE).open("a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
        if step > 0:  # Lightning's `log` is not available before the first step
            pl_module.log(f"train/guard_{self.metric}", value, batch_size=1)
        if self.exceeded:
            print(
                f"understanding guard: {self.metric} {value:.4f} at step {step} is {drop:.4f} below "
                f"its start {start:.4f} (margin {self.margin})"
            )
            if self.stop:
                trainer.should_stop = True
        return value
