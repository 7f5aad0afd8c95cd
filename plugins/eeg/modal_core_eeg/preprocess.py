"""From a raw mne recording to clean, positioned, resampled EEG.

`prepare_recording` is the one path every recording takes (files, simulated data,
real data sets), in this order:

1. keep the EEG channels (error if there are none) and drop those the file marks bad;
2. refuse recordings slower than the recipe rate, containing NaN/inf, or shorter than
   one window;
3. give every channel a scalp position: the file's own, or the standard montage's;
   channels it cannot place are refused or dropped (`unknown_channels`);
4. repair flat channels (`flat_channels`: drop, interpolate by spherical splines, or refuse);
5. band-pass and notch filter (zero-phase Butterworth designed by mne, so short windows
   filter without the long FIR kernels a 1 Hz high-pass would need), re-reference,
   and resample to the recipe rate.

Filter designs are cached per (rate, band), so preparing thousands of short windows
during training costs a few milliseconds each.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import sosfiltfilt

from modal_core.errors import DataError
from modal_core_eeg.io import import_mne
from modal_core_eeg.options import EEGOptions

NOTCH_HALF_WIDTH_HZ = 1.0
FILTER_ORDER = 4


@dataclass
class Recording:
    """Clean EEG: `data` (C, T) in volts at `sfreq`, channel names and head positions (C, 3) in metres."""

    data: np.ndarray  # (C, T)
    sfreq: float
    ch_names: list[str]
    positions: np.ndarray  # (C, 3)
    source: str = ""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.data.shape[1] / self.sfreq


def standard_montage(name: str) -> Any:
    """An mne standard montage by name (mne >= 1.13 renames `standard_1020`; same positions)."""
    mne = import_mne()
    with warnings.catch_warnings(), mne.utils.use_log_level("error"):  # mne warns through its logger too
        warnings.simplefilter("ignore", FutureWarning)
        return mne.channels.make_standard_montage(name)


def _has_position(channel: dict) -> bool:
    location = np.asarray(channel["loc"][:3], dtype=float)
    return bool(np.all(np.isfinite(location)) and np.any(location != 0))


@functools.cache
def montage_head_positions(name: str) -> dict[str, np.ndarray]:
    """Head-frame positions (metres) of a standard montage's channels, keyed by lower-case
    name: what `set_montage` would give them, computed once per montage."""
    mne = import_mne()
    montage = standard_montage(name)
    info = mne.create_info(montage.ch_names, 1000.0, "eeg")
    info.set_montage(montage)
    return {channel["ch_name"].lower(): np.array(channel["loc"][:3]) for channel in info["chs"]}


def clean_channel_name(name: str) -> str:
    """A channel name as montages spell it: `EEG Fp1-REF` -> `Fp1`, `Fc5.` -> `Fc5`
    (case is matched later). Files from many amplifiers decorate names this way."""
    name = re.sub(r"^EEG[\s_-]+", "", name.strip(), flags=re.IGNORECASE)
    name = re.sub(r"[-_](REF|LE|AVG|AR|M1|M2|A1|A2)$", "", name, flags=re.IGNORECASE)
    return name.rstrip(". ")


def _eeg_picks(raw: Any, source: str) -> np.ndarray:
    mne = import_mne()
    picks = mne.pick_types(raw.info, eeg=True, exclude="bads")
    if len(picks) == 0:
        types = sorted(set(raw.get_channel_types())) or ["none"]
        raise DataError(f"{source}: no EEG channels (channel types found: {', '.join(types)}); set channel types to 'eeg' first")
    return picks


def _check_signal(data: np.ndarray, names: list[str], rate: float, options: EEGOptions, source: str) -> None:
    if rate < options.sfreq:
        raise DataError(
            f"{source}: recorded at {rate:g} Hz, below the recipe rate modalities.eeg.sfreq={options.sfreq:g} Hz; "
            "upsampling cannot restore the missing frequencies, so lower sfreq (and h_freq) in the recipe"
        )
    bad = ~np.isfinite(data)
    if bad.any():
        channels = [names[i] for i in np.flatnonzero(bad.any(axis=1))]
        raise DataError(f"{source}: {int(bad.sum())} NaN/inf samples in channel(s) {', '.join(channels)}; fix or drop them")
    if data.shape[1] / rate < options.window_seconds:
        raise DataError(f"{source}: recording is {data.shape[1] / rate:.3f} s long, shorter than one window ({options.window_seconds:g} s)")


def _positions(raw: Any, picks: np.ndarray, options: EEGOptions, source: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, positions (C, 3) and kept indices into `picks`: the file's own positions
    when every channel has one, else the standard montage's (names cleaned and matched
    without regard to case)."""
    channels = [raw.info["chs"][i] for i in picks]
    if all(_has_position(channel) for channel in channels):  # the file brings digitised positions: keep them
        positions = np.array([channel["loc"][:3] for channel in channels], dtype=float)
        return [channel["ch_name"] for channel in channels], positions, np.arange(len(picks))
    known = montage_head_positions(options.montage)
    keys = [clean_channel_name(channel["ch_name"]).lower() for channel in channels]
    unknown = [channel["ch_name"] for channel, key in zip(channels, keys) if key not in known]
    if unknown and options.unknown_channels == "raise":
        raise DataError(
            f"{source}: channel(s) {', '.join(unknown)} are not in the {options.montage} montage and have no position "
            "in the file; rename them to 10-20 names, or set modalities.eeg.unknown_channels=drop"
        )
    keep = np.array([i for i, key in enumerate(keys) if key in known], dtype=int)
    _check_count(len(keep), options, source, f"unknown channels {unknown} dropped")
    names = [clean_channel_name(channels[i]["ch_name"]) for i in keep]
    return names, np.stack([known[keys[i]] for i in keep]), keep


def _check_count(count: int, options: EEGOptions, source: str, why: str) -> None:
    if count < options.min_channels:
        raise DataError(
            f"{source}: only {count} usable EEG channel(s) left ({why}); need modalities.eeg.min_channels={options.min_channels}"
        )
    if count > options.max_channels:
        raise DataError(f"{source}: {count} EEG channels, more than modalities.eeg.max_channels={options.max_channels}")


def _repair_flat(
    data: np.ndarray, names: list[str], positions: np.ndarray, rate: float, options: EEGOptions, source: str
) -> tuple[np.ndarray, list[str], np.ndarray]:
    flat = data.std(axis=1) < options.flat_microvolts * 1e-6
    if not flat.any():
        return data, names, positions
    flat_names = [name for name, is_flat in zip(names, flat) if is_flat]
    if options.flat_channels == "raise" or flat.all():
        raise DataError(
            f"{source}: flat channel(s) {', '.join(flat_names)} (std below {options.flat_microvolts:g} uV); "
            "check the electrodes, or set modalities.eeg.flat_channels to drop or interpolate"
        )
    _check_count(int((~flat).sum()), options, source, f"flat channels {flat_names}")
    if options.flat_channels == "drop":
        return data[~flat], [n for n, f in zip(names, flat) if not f], positions[~flat]
    mne = import_mne()  # interpolate: spherical splines from the good channels' positions
    info = mne.create_info(names, rate, "eeg")
    info.set_montage(mne.channels.make_dig_montage(ch_pos=dict(zip(names, positions)), coord_frame="head"))
    raw = mne.io.RawArray(data, info)
    raw.info["bads"] = flat_names
    raw.interpolate_bads(reset_bads=True)
    return raw.get_data(), names, positions


@functools.cache
def _sos(sfreq: float, low: float | None, high: float | None, kind: str) -> np.ndarray:
    """Second-order sections of a Butterworth filter designed by mne (cached)."""
    mne = import_mne()
    if kind == "bandstop":
        band, btype = [low, high], "bandstop"
    elif low is not None and high is not None:
        band, btype = [low, high], "bandpass"
    else:
        band, btype = (low, "highpass") if low is not None else (high, "lowpass")
    params = mne.filter.construct_iir_filter(
        {"order": FILTER_ORDER, "ftype": "butter", "output": "sos"}, band, None, sfreq, btype, return_copy=False
    )
    return params["sos"]


def filter_signal(data: np.ndarray, sfreq: float, options: EEGOptions) -> np.ndarray:
    """Zero-phase band-pass and notch filtering of `data` (C, T)."""
    if options.l_freq is not None or options.h_freq is not None:
        high = options.h_freq if options.h_freq is not None and options.h_freq < sfreq / 2 else None
        if options.l_freq is not None or high is not None:
            data = sosfiltfilt(_sos(sfreq, options.l_freq, high, "band"), data, axis=-1)
    for freq in options.notch_freqs:
        if freq + NOTCH_HALF_WIDTH_HZ < sfreq / 2:  # a line frequency above Nyquist is not in the data
            data = sosfiltfilt(_sos(sfreq, freq - NOTCH_HALF_WIDTH_HZ, freq + NOTCH_HALF_WIDTH_HZ, "bandstop"), data, axis=-1)
    return data


def rereference(data: np.ndarray, ch_names: list[str], reference: str, source: str) -> np.ndarray:
    """`data` (C, T) re-referenced to the common average, one channel, or unchanged (`none`)."""
    if reference == "none":
        return data
    if reference == "average":
        return data - data.mean(axis=0, keepdims=True)
    lookup = {name.lower(): i for i, name in enumerate(ch_names)}
    if reference.lower() not in lookup:
        raise DataError(f"{source}: reference channel {reference!r} (modalities.eeg.reference) is not among {', '.join(ch_names)}")
    return data - data[lookup[reference.lower()]]


def resample(data: np.ndarray, sfreq: float, target: float) -> np.ndarray:
    """`data` (C, T) resampled from `sfreq` to `target` Hz with mne's polyphase resampler."""
    if sfreq == target:
        return data
    mne = import_mne()
    # Polyphase: fast on short windows, and the band-pass (h_freq < sfreq / 2, checked
    # with the options) already removed what would alias.
    return mne.filter.resample(data, up=target, down=sfreq, axis=-1, method="polyphase")


def prepare_recording(raw: Any, options: EEGOptions, source: str = "") -> Recording:
    """Run every preprocessing step on an mne `Raw` (left unchanged) and return clean EEG."""
    source = source or _describe(raw)
    picks = _eeg_picks(raw, source)
    rate = float(raw.info["sfreq"])
    data = raw.get_data(picks=picks)  # (C, T) volts, a copy
    _check_signal(data, [raw.ch_names[i] for i in picks], rate, options, source)
    names, positions, keep = _positions(raw, picks, options, source)
    data, names, positions = _repair_flat(data[keep], names, positions, rate, options, source)
    data = filter_signal(data, rate, options)
    data = rereference(data, names, options.reference, source)
    data = resample(data, rate, options.sfreq)
    return Recording(data, options.sfreq, names, positions, source)


def _describe(raw: Any) -> str:
    filenames = [name for name in getattr(raw, "filenames", ()) if name]
    return str(filenames[0]) if filenames else "EEG recording"


def cut_window(recording: Recording, start_seconds: float, options: EEGOptions) -> np.ndarray:
    """The window (C, window_samples) starting `start_seconds` into the recording."""
    start = round(start_seconds * recording.sfreq)
    stop = start + options.window_samples
    if start < 0 or stop > recording.data.shape[1]:
        raise DataError(
            f"{recording.source}: a {options.window_seconds:g} s window at {start_seconds:g} s does not fit in "
            f"{recording.duration:.3f} s of recording (modalities.eeg.window_start)"
        )
    return recording.data[:, start:stop]


def fixed_windows(recording: Recording, options: EEGOptions, step_seconds: float | None = None) -> np.ndarray:
    """Consecutive windows (W, C, window_samples), `step_seconds` apart (default: no overlap)."""
    step = round((step_seconds or options.window_seconds) * recording.sfreq)
    if step <= 0:
        raise DataError(f"{recording.source}: window step must be positive, got {step_seconds}")
    starts = range(0, recording.data.shape[1] - options.window_samples + 1, step)
    return np.stack([recording.data[:, s : s + options.window_samples] for s in starts])


def event_epochs(
    recording: Recording, events: np.ndarray, original_sfreq: float, options: EEGOptions, tmin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Event-locked epochs (E, C, window_samples) starting `tmin` seconds from each event,
    and their event codes (E,). `events` is mne's (n, 3) array with sample indices at
    `original_sfreq` (as returned by `mne.events_from_annotations` on the file); events
    whose epoch would leave the recording are skipped."""
    onsets = np.round((events[:, 0] / original_sfreq + tmin) * recording.sfreq).astype(int)
    fits = (onsets >= 0) & (onsets + options.window_samples <= recording.data.shape[1])
    if not fits.any():
        raise DataError(f"{recording.source}: no event has a full {options.window_seconds:g} s epoch inside the recording")
    epochs = np.stack([recording.data[:, s : s + options.window_samples] for s in onsets[fits]])
    return epochs, events[fits, 2]
