"""Hook implementations of the EEG plugin: the `eeg` modality, its data sets and its
evaluator. Importing this module is cheap: mne loads only when EEG is first read."""

from __future__ import annotations

from typing import Any

from modal_core.hookspecs import hookimpl
from modal_core.modality import ModalitySpec
from modal_core_eeg.options import EEGOptions, validate_options

# The encoder, processor, data sets and evaluator import scipy and mne (seconds): they are
# imported when first used, so listing plugins or starting the CLI stays fast.


def _encoder(options: EEGOptions):
    from modal_core_eeg.encoder import EEGPatchEncoder

    return EEGPatchEncoder.from_options(validate_options(options))


def _adapter(options: EEGOptions, hidden: int):
    from modal_core_eeg.encoder import EEGAdapter

    return EEGAdapter(options.width, hidden, options.adapter_depth)


def _processor(options: EEGOptions):
    from modal_core_eeg.processor import EEGProcessor

    return EEGProcessor(options)


BEGIN_OF_EEG = "<begin_of_eeg>"
END_OF_EEG = "<end_of_eeg>"
EEG_PLACEHOLDER = "<eeg_placeholder>"

EEG = ModalitySpec(
    name="eeg",
    direction="input",
    options=EEGOptions,
    build_encoder=_encoder,
    build_adapter=_adapter,
    build_processor=_processor,
    num_positions=lambda options: validate_options(options).num_patches * options.queries_per_patch,
    payload_shape=lambda options: validate_options(options).payload_shape,
    begin_token=BEGIN_OF_EEG,
    end_token=END_OF_EEG,
    placeholder_token=EEG_PLACEHOLDER,
    cli_flag="eeg",
    keyword="eeg",
    description="EEG (FIF/EDF/BDF/BrainVision/EEGLAB via mne) -> channel-aware patch encoder + MLP adapter; text head answers",
)


@hookimpl
def modal_core_modalities() -> list[ModalitySpec]:
    return [EEG]


@hookimpl
def modal_core_datasets() -> dict[str, Any]:
    from modal_core_eeg.datasets import eeg_sim, eeg_sim_text, eegmmi_folder

    return {"eeg_sim": eeg_sim, "eeg_sim_text": eeg_sim_text, "eegmmi_folder": eegmmi_folder}


@hookimpl
def modal_core_evaluators() -> dict[str, Any]:
    from modal_core_eeg.evaluate import evaluate_simulated

    return {"eeg_sim": evaluate_simulated}
