"""Bad EEG input: each case is refused with a `DataError` naming the file and what was
expected, or repaired as documented (`docs/eeg.md`), never passed on as garbage."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch
from eeg.recordings import make_raw, mixed_rhythms

from modal_core.errors import DataError
from modal_core_eeg.options import EEGOptions
from modal_core_eeg.processor import EEGProcessor, split_payload
from modal_core_eeg.simulate import CHANNELS_10_20, CLASSES, simulate_recording


def _save(raw: mne.io.BaseRaw, path) -> str:
    raw.save(path, verbose="error")
    return str(path)


def _process(path, **options) -> torch.Tensor:
    return EEGProcessor(EEGOptions(max_channels=24, **options))(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"EEG file not found: .*nowhere_raw\.fif"):
        _process(tmp_path / "nowhere_raw.fif")


def test_unknown_file_type(tmp_path):
    path = tmp_path / "recording.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"recording\.csv: unknown EEG file type '\.csv'; readable: .*\.edf"):
        _process(path)


def test_corrupt_fif(tmp_path):
    path = tmp_path / "truncated_raw.fif"
    good = _save(make_raw(mixed_rhythms(128.0, 2.0), 128.0), tmp_path / "good_raw.fif")
    path.write_bytes(open(good, "rb").read()[:2000])
    with pytest.raises(DataError, match=r"truncated_raw\.fif: cannot read this FIF"):
        _process(path)


def test_no_eeg_channels(tmp_path):
    raw = make_raw(mixed_rhythms(128.0, 2.0)[:3], 128.0, ("EOG1", "EOG2", "ECG"), types="misc")
    with pytest.raises(DataError, match=r"no_eeg_raw\.fif: no EEG channels \(channel types found: misc\)"):
        _process(_save(raw, tmp_path / "no_eeg_raw.fif"))


def test_sampling_rate_below_the_recipe_rate(tmp_path):
    path = _save(make_raw(mixed_rhythms(100.0, 3.0), 100.0), tmp_path / "slow_raw.fif")
    with pytest.raises(DataError, match=r"slow_raw\.fif: recorded at 100 Hz, below the recipe rate modalities\.eeg\.sfreq=128 Hz"):
        _process(path)


def test_nan_samples(tmp_path):
    data = mixed_rhythms(128.0, 2.0)
    data[CHANNELS_10_20.index("Cz"), 40:50] = np.nan
    with pytest.raises(DataError, match=r"holes_raw\.fif: 10 NaN/inf samples in channel\(s\) Cz"):
        _process(_save(make_raw(data, 128.0), tmp_path / "holes_raw.fif"))


def test_too_short(tmp_path):
    path = _save(make_raw(mixed_rhythms(128.0, 1.5), 128.0), tmp_path / "short_raw.fif")
    with pytest.raises(DataError, match=r"short_raw\.fif: recording is 1\.500 s long, shorter than one window \(2 s\)"):
        _process(path)


def test_window_start_past_the_end(tmp_path):
    path = _save(make_raw(mixed_rhythms(128.0, 3.0), 128.0), tmp_path / "late_raw.fif")
    with pytest.raises(DataError, match=r"late_raw\.fif: a 2 s window at 2\.5 s does not fit in 3\.000 s"):
        _process(path, window_start=2.5)


def test_unknown_channel_names_raise_by_default(tmp_path):
    names = (*CHANNELS_10_20[:-2], "Foo", "Bar9")
    path = _save(make_raw(mixed_rhythms(128.0, 2.0), 128.0, names), tmp_path / "odd_names_raw.fif")
    with pytest.raises(DataError, match=r"odd_names_raw\.fif: channel\(s\) Foo, Bar9 are not in the standard_1020 montage"):
        _process(path)


def test_unknown_channel_names_can_be_dropped(tmp_path):
    names = (*CHANNELS_10_20[:-2], "Foo", "Bar9")
    path = _save(make_raw(mixed_rhythms(128.0, 2.0), 128.0, names), tmp_path / "odd_names_raw.fif")
    mask, _, _ = split_payload(_process(path, unknown_channels="drop"))
    assert int(mask.sum()) == 17


def test_flat_channel_raises_when_asked(tmp_path):
    data = mixed_rhythms(128.0, 2.0)
    data[CHANNELS_10_20.index("O2")] = 3.0  # a constant: the electrode is off
    with pytest.raises(DataError, match=r"flat_raw\.fif: flat channel\(s\) O2 \(std below 0\.1 uV\)"):
        _process(_save(make_raw(data, 128.0), tmp_path / "flat_raw.fif"), flat_channels="raise")


def test_flat_channel_is_dropped_by_default(tmp_path):
    data = mixed_rhythms(128.0, 2.0)
    data[CHANNELS_10_20.index("O2")] = 0.0
    mask, _, _ = split_payload(_process(_save(make_raw(data, 128.0), tmp_path / "flat_raw.fif")))
    assert int(mask.sum()) == 18


def test_flat_channel_is_interpolated_from_its_neighbours(tmp_path):
    raw = simulate_recording(CLASSES[0], 2.0, np.random.default_rng(3))  # occipital alpha: O2 is strong and smooth
    original = raw.get_data()[CHANNELS_10_20.index("O2")].copy()
    broken = raw.copy()
    broken._data[CHANNELS_10_20.index("O2")] = 0.0
    broken.set_montage(None)
    options = {"flat_channels": "interpolate", "reference": "none", "notch_freqs": [], "l_freq": None, "h_freq": None, "sfreq": 256.0}
    _, _, signal = split_payload(_process(_save(broken, tmp_path / "o2_off_raw.fif"), **options))
    repaired = signal[CHANNELS_10_20.index("O2")].numpy()
    assert np.corrcoef(repaired, original)[0, 1] > 0.8


def test_every_channel_flat(tmp_path):
    path = _save(make_raw(np.zeros((19, 256)), 128.0), tmp_path / "dead_raw.fif")
    with pytest.raises(DataError, match=r"dead_raw\.fif: flat channel\(s\) Fp1, .*O2"):
        _process(path)


def test_too_few_channels_left(tmp_path):
    names = ("Fp1", "Fp2", "Foo", "Bar")
    path = _save(make_raw(mixed_rhythms(128.0, 2.0)[:4], 128.0, names), tmp_path / "sparse_raw.fif")
    with pytest.raises(DataError, match=r"sparse_raw\.fif: only 2 usable EEG channel\(s\) left .*min_channels=4"):
        _process(path, unknown_channels="drop")


def test_more_channels_than_slots(tmp_path):
    path = _save(make_raw(mixed_rhythms(128.0, 2.0), 128.0), tmp_path / "wide_raw.fif")
    with pytest.raises(DataError, match=r"wide_raw\.fif: 19 EEG channels, more than modalities\.eeg\.max_channels=16"):
        EEGProcessor(EEGOptions(max_channels=16))(path)


def test_missing_reference_channel(tmp_path):
    path = _save(make_raw(mixed_rhythms(128.0, 2.0), 128.0), tmp_path / "noref_raw.fif")
    with pytest.raises(DataError, match=r"noref_raw\.fif: reference channel 'M1' .* is not among"):
        _process(path, reference="M1")


def test_wrong_kind_of_input():
    with pytest.raises(DataError, match="EEG input must be a file path, an mne Raw, a Recording or an EEGSegment, got int"):
        EEGProcessor(EEGOptions())(42)
