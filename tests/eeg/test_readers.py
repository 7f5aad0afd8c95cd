"""Each file format is written with mne's exporters (edfio, pybv, eeglabio) or mne
itself, read back through the processor, and must give the payload the in-memory
recording gives."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch

from eeg.recordings import make_raw, mixed_rhythms
from modal_core.errors import DataError
from modal_core_eeg.io import read_recording
from modal_core_eeg.options import EEGOptions
from modal_core_eeg.preprocess import montage_head_positions, standard_montage
from modal_core_eeg.processor import HEAD_RADIUS_M, EEGProcessor, split_payload
from modal_core_eeg.simulate import CHANNELS_10_20

FORMATS = {
    "fif": lambda raw, path: raw.save(path, verbose="error"),
    "edf": lambda raw, path: mne.export.export_raw(path, raw, verbose="error"),
    "bdf": lambda raw, path: mne.export.export_raw(path, raw, verbose="error"),
    "vhdr": lambda raw, path: mne.export.export_raw(path, raw, verbose="error"),
    "set": lambda raw, path: mne.export.export_raw(path, raw, verbose="error"),
}
FILE_NAMES = {"fif": "rec_raw.fif", "edf": "rec.edf", "bdf": "rec.bdf", "vhdr": "rec.vhdr", "set": "rec.set"}
# EDF stores 16-bit samples over the exported physical range; the others 24/32-bit or floats.
TOLERANCE = {"fif": 1e-4, "edf": 2e-2, "bdf": 1e-3, "vhdr": 1e-3, "set": 1e-4}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_written_file_reads_back_to_the_same_payload(kind, tmp_path):
    raw = make_raw(mixed_rhythms(256.0, 3.0), 256.0)
    path = tmp_path / FILE_NAMES[kind]
    FORMATS[kind](raw, path)
    options = EEGOptions(max_channels=24)
    processor = EEGProcessor(options)
    from_file = processor(path)
    in_memory = processor(raw)
    assert from_file.shape == (24, 4 + options.window_samples)
    mask, positions, signal = split_payload(from_file)
    assert mask.sum() == 19 and not mask[19:].any()
    expected_positions = np.stack([montage_head_positions("standard_1020")[name.lower()] for name in CHANNELS_10_20])
    torch.testing.assert_close(positions[:19], torch.from_numpy(expected_positions / HEAD_RADIUS_M).float())
    # Signals are in units of 20 uV: the tolerance is in those units.
    torch.testing.assert_close(signal, split_payload(in_memory)[2], atol=TOLERANCE[kind], rtol=0)
    assert signal[:19].std() > 0.3  # the rhythms survived reading and filtering


def test_read_recording_keeps_channel_names_and_rate(tmp_path):
    raw = make_raw(mixed_rhythms(200.0, 2.0), 200.0)
    path = tmp_path / "names_raw.fif"
    raw.save(path, verbose="error")
    back = read_recording(path)
    assert back.ch_names == list(CHANNELS_10_20) and back.info["sfreq"] == 200.0
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-6, atol=1e-12)


def test_gzipped_fif_counts_as_fif(tmp_path):
    raw = make_raw(mixed_rhythms(128.0, 2.0), 128.0)
    path = tmp_path / "packed_raw.fif.gz"
    raw.save(path, verbose="error")
    assert read_recording(path).n_times == raw.n_times


def test_file_positions_win_over_the_montage(tmp_path):
    raw = make_raw(mixed_rhythms(128.0, 2.0), 128.0)
    montage = raw.copy().set_montage(standard_montage("standard_1020")).get_montage()
    shifted = {name: position + 0.01 for name, position in montage.get_positions()["ch_pos"].items()}
    raw.set_montage(mne.channels.make_dig_montage(ch_pos=shifted, coord_frame="head"))
    path = tmp_path / "digitised_raw.fif"
    raw.save(path, verbose="error")
    _, positions, _ = split_payload(EEGProcessor(EEGOptions(max_channels=19))(path))
    expected = np.stack([shifted[name] for name in CHANNELS_10_20]) / HEAD_RADIUS_M
    torch.testing.assert_close(positions, torch.from_numpy(expected).float())


def test_unreadable_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "broken.edf"
    path.write_bytes(b"0       not an edf header at all")
    with pytest.raises(DataError, match=r"broken\.edf: cannot read this EDF file"):
        read_recording(path)
