"""Lightning `CheckpointIO` that writes checkpoint directories in safetensors instead
of pickles, so `trainer.fit(ckpt_path=...)` resumes from them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import CheckpointIO

from modal_core.checkpoints.serialization import load_state, save_state
from modal_core.checkpoints.store import (
    load_model_state,
    save_model_state,
    write_atomically,
)

MODEL_PREFIX = "model."
TRAINER_STATE = "trainer_state"


class SafetensorsCheckpointIO(CheckpointIO):
    """Saves Lightning's checkpoint dict as a modal-core checkpoint directory.

    `write_extras(directory)` adds the run's files (resolved recipe, tokenizer) to every
    checkpoint so each one can be used on its own.
    """

    def __init__(self, write_extras: Callable[[Path], None]) -> None:
        self.write_extras = write_extras

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        state = dict(checkpoint)
        weights = state.pop("state_dict")
        model_state = {key.removeprefix(MODEL_PREFIX): value for key, value in weights.items()}

        def fill(directory: Path) -> None:
            save_model_state(model_state, directory)
            save_state(state, directory, TRAINER_STATE)
            self.write_extras(directory)

        write_atomically(Path(path), fill)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> dict[str, Any]:
        directory = Path(path)
        weights = load_model_state(directory)  # verifies the manifest first
        checkpoint = load_state(directory, TRAINER_STATE)
        checkpoint["state_dict"] = {MODEL_PREFIX + key: value for key, value in weights.items()}
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        shutil.rmtree(path, ignore_errors=True)
