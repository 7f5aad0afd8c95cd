"""The hooks of the time-series plugin; the `modal_core` entry point names this module.

Importing it only defines objects: modal-core imports every installed plugin when it
starts, so keep this module cheap."""

from __future__ import annotations

from typing import Any

from modal_core.hookspecs import hookimpl
from modal_core.modality import ModalitySpec
from torch import nn

from modal_core_time_series.evaluate import evaluate_waves
from modal_core_time_series.modality import TIME_SERIES
from modal_core_time_series.waves import waves, waves_text


@hookimpl
def modal_core_modalities() -> list[ModalitySpec]:
    return [TIME_SERIES]


@hookimpl
def modal_core_datasets() -> dict[str, Any]:
    return {"time_series_waves": waves, "time_series_waves_text": waves_text}


@hookimpl
def modal_core_evaluators() -> dict[str, Any]:
    return {"time_series_waves": evaluate_waves}


@hookimpl
def modal_core_block_classes() -> list[type]:
    # With FSDP every encoder layer becomes its own shard unit; with activation
    # checkpointing it is recomputed in the backward pass.
    return [nn.TransformerEncoderLayer]
