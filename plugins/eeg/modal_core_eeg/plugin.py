"""Hook implementations of the EEG plugin: the `eeg` modality, its data sets and its
evaluator. Importing this module is cheap: mne loads only when EEG is first read."""

from __future__ import annotations

from typing import Any

from modal_core.hookspecs import hookimpl
from modal_core.modality import ModalitySpec
from modal_core_eeg.datasets import eeg_sim, eeg_sim_text, eegmmi_folder
from modal_core_eeg.encoder import EEGAdapter, EEGPatchEncoder
from modal_core_eeg.evaluate import evaluate_simulated
from modal_core_eeg.options import EEGOptions, validate_options
from modal_core_eeg.processor import EEGProcessor

BEGIN_OF_EEG = "<begin_of_eeg>"
END_OF_EEG = "<end_of_eeg>"
EEG_PLACEHOLDER = "<eeg_placeholder>"

EEG = ModalitySpec(
    name="eeg",
    direction="input",
    options=EEGOptions,
    build_encoder=lambda options: EEGPatchEncoder.from_options(validate_options(options)),
    build_adapter=lambda options, hidden: EEGAdapter(options.width, hidden, options.adapter_depth),
    build_processor=EEGProcessor,
    num_positions=lambda options: validate_options(options).num_patches * options.queries_per_patch,
    begin_token=BEGIN_OF_EEG,
    end_token=END_OF_EEG,
    placeholder_token=EEG_PLACEHOLDER,
    cli_flag="eeg",
    description="EEG (FIF/EDF/BDF/BrainVision/EEGLAB via mne) -> channel-aware patch encoder + MLP adapter; text head answers",
)


@hookimpl
def modal_core_modalities() -> list[ModalitySpec]:
    return [EEG]


@hookimpl
def modal_core_datasets() -> dict[str, Any]:
    return {"eeg_sim": eeg_sim, "eeg_sim_text": eeg_sim_text, "eegmmi_folder": eegmmi_folder}


@hookimpl
def modal_core_evaluators() -> dict[str, Any]:
    return {"eeg_sim": evaluate_simulated}
