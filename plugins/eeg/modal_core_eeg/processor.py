"""The EEG processor: a file path or an mne `Raw` in, one payload tensor out.

Payload layout, one row per channel slot (``max_channels`` rows, unused rows zero)::

    [valid, x, y, z, s_0, ..., s_{T-1}]

`valid` is 1 for a real channel, (x, y, z) its scalp position in head radii, and
s_t its signal in units of `scale_microvolts`. Carrying positions inside the payload is
what lets recordings with different channel sets share one batch and one encoder.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modal_core.errors import DataError
from modal_core_eeg.io import read_recording
from modal_core_eeg.options import HEADER, EEGOptions, validate_options
from modal_core_eeg.preprocess import Recording, cut_window, prepare_recording

HEAD_RADIUS_M = 0.095
"""Radius of mne's standard head sphere; positions are divided by it (unit scale)."""


def to_payload(window: np.ndarray, positions: np.ndarray, options: EEGOptions, source: str = "") -> torch.Tensor:
    """Pack a window (C, T) in volts and its channel positions (C, 3) in metres into a
    payload (max_channels, 4 + T)."""
    channels, samples = window.shape
    if samples != options.window_samples:
        raise DataError(f"{source or 'EEG window'}: {samples} samples, expected {options.window_samples} (sfreq x window_seconds)")
    if channels > options.max_channels:
        raise DataError(f"{source or 'EEG window'}: {channels} channels, more than modalities.eeg.max_channels={options.max_channels}")
    payload = torch.zeros(options.max_channels, HEADER + samples)
    payload[:channels, 0] = 1.0
    payload[:channels, 1:HEADER] = torch.from_numpy(positions / HEAD_RADIUS_M).float()
    payload[:channels, HEADER:] = torch.from_numpy(window * 1e6 / options.scale_microvolts).float()
    return payload


def split_payload(payload: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Channel mask (n, C) bool, positions (n, C, 3) and signals (n, C, T) of a payload batch."""
    return payload[..., 0] > 0.5, payload[..., 1:HEADER], payload[..., HEADER:]


@dataclass(frozen=True)
class EEGSegment:
    """A window of a longer recording: `recording` (a path or an mne `Raw`) is prepared
    whole, so filters see the continuous signal, then cut at `start` seconds."""

    recording: Any
    start: float


class EEGProcessor:
    """Turns one raw item into a payload. Items: a path to an EEG file, an mne `Raw`, a
    prepared `Recording` (windows start at `options.window_start`), or an `EEGSegment`."""

    def __init__(self, options: EEGOptions, cache_size: int = 8) -> None:
        self.options = validate_options(options)
        # Data sets cut many segments from one file: keep the last few files prepared.
        self._prepared_file = functools.lru_cache(maxsize=cache_size)(self._prepare_file)

    def _prepare_file(self, path: str) -> Recording:
        return prepare_recording(read_recording(path), self.options, path)

    def prepare(self, item: Any) -> Recording:
        """Clean EEG of one item (see `preprocess.prepare_recording`)."""
        if isinstance(item, Recording):
            return item
        if isinstance(item, (str, Path)):
            return self._prepared_file(str(Path(item).expanduser().resolve()))
        if hasattr(item, "info") and hasattr(item, "get_data") and hasattr(item, "n_times"):  # an mne Raw
            return prepare_recording(item, self.options)
        raise DataError(f"EEG input must be a file path, an mne Raw, a Recording or an EEGSegment, got {type(item).__name__}")

    def __call__(self, item: Any) -> torch.Tensor:
        start = self.options.window_start
        if isinstance(item, EEGSegment):
            item, start = item.recording, item.start
        recording = self.prepare(item)
        window = cut_window(recording, start, self.options)
        return to_payload(window, recording.positions, self.options, recording.source)
