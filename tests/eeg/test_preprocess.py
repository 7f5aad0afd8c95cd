"""Preprocessing maths: resampling keeps a sinusoid's frequency and values, filters
remove line noise and drift, references and windows land where they should."""

from __future__ import annotations

import mne
import numpy as np
import pytest

from eeg.recordings import make_raw, mixed_rhythms
from modal_core.errors import RecipeError
from modal_core_eeg.options import EEGOptions, validate_options
from modal_core_eeg.preprocess import clean_channel_name, event_epochs, fixed_windows, prepare_recording
from modal_core_eeg.simulate import CHANNELS_10_20

UNFILTERED = {"l_freq": None, "h_freq": None, "notch_freqs": [], "reference": "none"}


def _sinusoid_recording(sfreq: float, seconds: float, frequency: float) -> mne.io.RawArray:
    times = np.arange(round(sfreq * seconds)) / sfreq
    data = np.random.default_rng(0).normal(0, 1, (len(CHANNELS_10_20), times.size))  # other channels: not flat
    data[0] = 30 * np.sin(2 * np.pi * frequency * times)
    return make_raw(data, sfreq)


@pytest.mark.parametrize("source_rate", [512.0, 500.0, 160.0])
def test_resampling_preserves_a_sinusoid(source_rate):
    recording = prepare_recording(_sinusoid_recording(source_rate, 4.0, 10.0), EEGOptions(sfreq=128.0, **UNFILTERED))
    assert recording.sfreq == 128.0 and recording.data.shape == (19, 512)
    times = np.arange(512) / 128.0
    middle = slice(32, -32)  # the resampler pads the ends
    np.testing.assert_allclose(recording.data[0, middle] * 1e6, 30 * np.sin(2 * np.pi * 10.0 * times[middle]), atol=0.05)


@pytest.mark.parametrize("frequency", [6.0, 10.0, 22.0])
def test_full_chain_keeps_the_frequency_and_amplitude(frequency):
    options = EEGOptions(sfreq=128.0, l_freq=1.0, h_freq=45.0, notch_freqs=[50.0], reference="none")
    signal = prepare_recording(_sinusoid_recording(500.0, 8.0, frequency), options).data[0] * 1e6
    spectrum = np.abs(np.fft.rfft(signal))
    assert np.fft.rfftfreq(signal.size, 1 / 128.0)[spectrum.argmax()] == pytest.approx(frequency)
    assert np.sqrt(2) * signal[256:-256].std() == pytest.approx(30.0, rel=0.03)


def test_without_resampling_the_signal_is_untouched():
    raw = make_raw(mixed_rhythms(128.0, 2.0), 128.0)
    recording = prepare_recording(raw, EEGOptions(sfreq=128.0, **UNFILTERED))
    np.testing.assert_array_equal(recording.data, raw.get_data())


def test_notch_and_high_pass_remove_line_noise_and_drift():
    sfreq, times = 256.0, np.arange(2048) / 256.0
    alpha = 20 * np.sin(2 * np.pi * 10 * times)
    data = np.tile(alpha + 15 * np.sin(2 * np.pi * 50 * times) + 40 * times / times[-1] + 100.0, (19, 1))
    data[1:] += np.random.default_rng(0).normal(0, 1, (18, times.size))
    recording = prepare_recording(make_raw(data, sfreq), EEGOptions(sfreq=256.0, l_freq=1.0, h_freq=None, reference="none"))
    cleaned = recording.data[0, 512:-512] * 1e6  # the middle 4 s, clear of the high-pass's edge transients
    np.testing.assert_allclose(cleaned, alpha[512:-512], atol=1.0)  # drift, offset and 50 Hz gone; alpha kept


def test_average_and_channel_reference():
    raw = make_raw(mixed_rhythms(128.0, 2.0), 128.0)
    average = prepare_recording(raw, EEGOptions(**{**UNFILTERED, "reference": "average"}))
    np.testing.assert_allclose(average.data.mean(axis=0), 0.0, atol=1e-15)
    to_cz = prepare_recording(raw, EEGOptions(**{**UNFILTERED, "reference": "Cz"}))
    assert np.abs(to_cz.data[CHANNELS_10_20.index("Cz")]).max() == 0.0
    np.testing.assert_allclose(to_cz.data[0], raw.get_data()[0] - raw.get_data()[CHANNELS_10_20.index("Cz")])


def _ramp_recording(sfreq: float, seconds: float) -> mne.io.RawArray:
    """Every channel's value is the time in seconds (in uV), so a window's first sample says where it starts."""
    times = np.arange(round(sfreq * seconds)) / sfreq
    return make_raw(np.tile(times, (19, 1)), sfreq)


def test_fixed_windows_tile_the_recording():
    options = EEGOptions(sfreq=128.0, window_seconds=2.0, **UNFILTERED)
    recording = prepare_recording(_ramp_recording(128.0, 7.0), options)
    windows = fixed_windows(recording, options)
    assert windows.shape == (3, 19, 256)
    np.testing.assert_allclose(windows[:, 0, 0] * 1e6, [0.0, 2.0, 4.0])
    assert fixed_windows(recording, options, step_seconds=0.5).shape[0] == 11


def test_event_epochs_start_at_annotated_events_after_resampling():
    raw = _ramp_recording(256.0, 10.0)
    raw.set_annotations(mne.Annotations(onset=[1.0, 4.5, 9.0], duration=[0, 0, 0], description=["T1", "T2", "T1"]))
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    options = EEGOptions(sfreq=128.0, window_seconds=2.0, **UNFILTERED)
    recording = prepare_recording(raw, options)
    epochs, codes = event_epochs(recording, events, raw.info["sfreq"], options, tmin=-0.5)
    assert epochs.shape == (2, 19, 256)  # the event at 9 s has no full window left
    assert list(codes) == [event_id["T1"], event_id["T2"]]
    np.testing.assert_allclose(epochs[:, 0, 0] * 1e6, [0.5, 4.0], atol=0.02)  # polyphase smooths the ramp's ends slightly


@pytest.mark.parametrize(("name", "clean"), [("EEG Fp1-REF", "Fp1"), ("Fc5.", "Fc5"), ("T9..", "T9"), ("cz", "cz"), ("EEG_O2-LE", "O2")])
def test_channel_names_are_cleaned_for_the_montage(name, clean):
    assert clean_channel_name(name) == clean


def test_decorated_names_get_montage_positions():
    names = tuple(f"EEG {name.upper()}-REF" for name in CHANNELS_10_20)
    recording = prepare_recording(make_raw(mixed_rhythms(128.0, 2.0), 128.0, names), EEGOptions())
    assert recording.ch_names[:3] == ["FP1", "FP2", "F7"] and np.abs(recording.positions).sum(axis=1).min() > 0


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"patch_samples": 48}, "patch_samples"),
        ({"h_freq": 70.0}, "h_freq"),
        ({"l_freq": 50.0, "h_freq": 40.0}, "l_freq"),
        ({"flat_channels": "ignore"}, "flat_channels"),
        ({"width": 30, "num_heads": 4}, "num_heads"),
    ],
)
def test_inconsistent_options_name_the_key(changes, key):
    with pytest.raises(RecipeError, match=f"modalities.eeg.*{key}"):
        validate_options(EEGOptions(**changes))
