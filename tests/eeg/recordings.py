"""Small recordings with known content, shared by the EEG tests."""

from __future__ import annotations

import mne
import numpy as np

from modal_core_eeg.simulate import CHANNELS_10_20


def make_raw(data_uv: np.ndarray, sfreq: float, channels: tuple[str, ...] = CHANNELS_10_20, types: str = "eeg") -> mne.io.RawArray:
    """An mne Raw of `data_uv` (C, T) in microvolts, no montage (readers give none)."""
    info = mne.create_info(list(channels), sfreq, types)
    return mne.io.RawArray(data_uv * 1e-6, info, verbose="error")


def mixed_rhythms(sfreq: float, seconds: float, seed: int = 0) -> np.ndarray:
    """(19, T) microvolts: a different sinusoid per channel plus a little noise."""
    rng = np.random.default_rng(seed)
    times = np.arange(round(sfreq * seconds)) / sfreq
    frequencies = np.linspace(4, 30, len(CHANNELS_10_20))[:, None]
    return 20 * np.sin(2 * np.pi * frequencies * times + rng.uniform(0, 6, (len(CHANNELS_10_20), 1))) + rng.normal(
        0, 2, (len(CHANNELS_10_20), times.size)
    )
