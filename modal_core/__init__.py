"""modal-core: train, fine-tune and extend Janus-style unified multimodal models.

Public API (imported lazily, so `import modal_core` stays light):

- `ModalitySpec`, `hookimpl`: what plugins implement.
- `Text`, `Media`, `Sample`: training samples as segment lists.
- `load_recipe`, `train`, `TrainResult`: the recipe path, from Python; `modal_core.recipes`
  finds the shipped recipes (`recipes.find("quickstart/text")`).
- `load(checkpoint)`: a trained model; `.answer(...)`, `.generate_images(...)`.
- `get_plugin_manager`, `PluginManager`: installed plugins.
- `ModalCoreError` and its subclasses: every user-facing error.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

try:
    __version__ = importlib.metadata.version("modal-core")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

_EXPORTS = {
    "ModalitySpec": "modal_core.modality",
    "hookimpl": "modal_core.hookspecs",
    "Text": "modal_core.data.segments",
    "Media": "modal_core.data.segments",
    "Sample": "modal_core.data.segments",
    "load_recipe": "modal_core.config.loader",
    "train": "modal_core.training.api",
    "TrainResult": "modal_core.training.run",
    "get_plugin_manager": "modal_core.plugins",
    "PluginManager": "modal_core.plugins",
    "UnifiedModel": "modal_core.model.unified",
    "load": "modal_core.generation.pipeline",
    "Pipeline": "modal_core.generation.pipeline",
    "ModalCoreError": "modal_core.errors",
    "RecipeError": "modal_core.errors",
    "PluginError": "modal_core.errors",
    "DataError": "modal_core.errors",
    "CheckpointError": "modal_core.errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modal_core' has no attribute {name!r}")
