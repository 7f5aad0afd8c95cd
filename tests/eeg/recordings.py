"""Small recordings with known content, shared by the EEG tests."""

from __future__ import annotations

from pathlib import Path

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


def write_eegmmi_run(root: Path, subject: int, run: int) -> None:
    """One 20 s, 160 Hz EDF file laid out and named as PhysioNet's eegmmidb ships it
    (`S001/S001R04.edf`), with rest (T0) and two task (T1, T2) annotations."""
    # PhysioNet's names: padded with dots to four characters, upper/lower case mixed.
    names = tuple(f"{name[0]}{name[1:].lower()}".ljust(4, ".") for name in CHANNELS_10_20)
    raw = make_raw(mixed_rhythms(160.0, 20.0, seed=subject * 100 + run), 160.0, names)
    raw.set_annotations(mne.Annotations(onset=[1.0, 6.0, 11.0], duration=[4.0, 4.0, 4.0], description=["T0", "T1", "T2"]))
    folder = root / f"S{subject:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(folder / f"S{subject:03d}R{run:02d}.edf", raw, verbose="error")
