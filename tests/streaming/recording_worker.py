"""`modal-core train RECIPE [key=value ...]` that also appends each training batch's token
rows its rank and its step to OUT as JSON lines: what the run read, in order.

Run as a script (`python recording_worker.py RECIPE OUT [key=value ...]`), so that a test
can stop it with a signal as a user stops `modal-core train` (exit code 143).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from modal_core import cli
from modal_core.training import run
from modal_core.training.module import UnifiedTrainingModule


class RecordingModule(UnifiedTrainingModule):
    """The training module, plus a record of every batch it trains on."""

    out: Path

    def training_step(self, batch, batch_idx):
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask)]
        with self.out.open("a") as handle:
            handle.write(json.dumps({"rank": self.global_rank, "step": self.global_step, "rows": rows}) + "\n")
        return super().training_step(batch, batch_idx)


def main(recipe_path: str, out: str, *overrides: str) -> int:
    RecordingModule.out = Path(out)
    run.UnifiedTrainingModule = RecordingModule  # the one class `train` instantiates
    return cli.main(["train", recipe_path, *overrides])


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
