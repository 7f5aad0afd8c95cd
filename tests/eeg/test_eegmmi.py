"""The EEG Motor Movement/Imagery loader on a tiny folder laid out as PhysioNet ships it."""

from __future__ import annotations

import numpy as np
import pytest

from eeg.recordings import write_eegmmi_run
from modal_core.errors import DataError, RecipeError
from modal_core_eeg.datasets import eegmmi_folder
from modal_core_eeg.options import EEGOptions
from modal_core_eeg.processor import EEGProcessor, EEGSegment, split_payload


@pytest.fixture
def eegmmi_root(tmp_path):
    for subject in (1, 2):
        for run in (4, 5):
            write_eegmmi_run(tmp_path, subject, run)
    return tmp_path


def test_trials_are_labelled_by_run_and_split_by_subject(eegmmi_root):
    train = eegmmi_folder({"path": str(eegmmi_root), "runs": [4]}, 0, "train")
    test = eegmmi_folder({"path": str(eegmmi_root), "runs": [4]}, 0, "test")
    assert len(train) == 2 and len(test) == 2  # subject 1 trains, subject 2 (the last 10 %) is held out
    answers = sorted(train[i].segments[-1].text.split("<")[0].strip() for i in range(2))
    assert answers == ["imagined left fist", "imagined right fist"]
    segment = test[0].segments[1].payload
    assert isinstance(segment, EEGSegment) and "S002" in str(segment.recording) and segment.start in (6.0, 11.0)
    both = eegmmi_folder({"path": str(eegmmi_root), "runs": [5], "include_rest": True}, 0, "train")
    assert sorted(both[i].segments[-1].text.split("<")[0].strip() for i in range(3)) == ["both feet", "both fists", "rest"]


def test_segments_of_a_file_become_payloads(eegmmi_root):
    options = EEGOptions(window_seconds=4.0, patch_samples=64, max_channels=24)
    dataset = eegmmi_folder({"path": str(eegmmi_root), "runs": [4], "tmin": 0.5}, 0, "train")
    processor = EEGProcessor(options)
    payloads = [processor(dataset[i].segments[1].payload) for i in range(len(dataset))]
    mask, positions, signal = split_payload(payloads[0])
    assert payloads[0].shape == (24, 4 + 512) and int(mask.sum()) == 19
    assert np.abs(positions[:19].numpy()).sum(axis=1).min() > 0  # dotted names found in the montage
    assert not np.allclose(payloads[0], payloads[1])


def test_missing_folder_and_task_free_runs(tmp_path, eegmmi_root):
    with pytest.raises(DataError, match="EEG Motor Movement/Imagery folder not found"):
        eegmmi_folder({"path": str(tmp_path / "nope")}, 0, "train")
    with pytest.raises(RecipeError, match=r"runs: \[1, 2\] are baseline"):
        eegmmi_folder({"path": str(eegmmi_root), "runs": [1, 2]}, 0, "train")
    with pytest.raises(DataError, match="no files named like S001R04.edf for runs \\[6\\]"):
        eegmmi_folder({"path": str(eegmmi_root), "runs": [6]}, 0, "train")
