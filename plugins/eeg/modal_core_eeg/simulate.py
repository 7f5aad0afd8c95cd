"""A simulated EEG world made with mne: six kinds of activity on the 10-20 montage.

Each recording is the sum of

- pink (1/f) background noise on every channel, plus a weak posterior alpha rhythm;
- the class's source: a rhythm or burst with a Gaussian scalp topography centred on
  the electrodes where that activity is seen clinically (positions from mne's standard
  10-20 montage), amplitude and frequency drawn per recording;
- nuisances the preprocessing must remove: 50 Hz line noise and a slow drift.

The channel signals become an `mne.io.RawArray` with the montage set, so a simulated
recording takes exactly the path a file does (filters, reference, resampling).
Every recording is a pure function of (seed, split, index).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from modal_core_eeg.io import import_mne
from modal_core_eeg.preprocess import standard_montage

CHANNELS_10_20 = ("Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3", "Pz", "P4", "P8", "O1", "O2")
SIMULATION_SFREQ = 256.0
LINE_FREQUENCY = 50.0
SPATIAL_SPREAD_M = 0.045


@dataclass(frozen=True)
class ActivityClass:
    """One simulated class and what the model should say about it."""

    name: str
    """Answer to "what activity does this eeg show?"."""
    rhythm: str
    """Answer to "what is the dominant rhythm?"."""
    region: str
    """Answer to "where is the activity strongest?"."""
    side: str
    """Answer to "which side shows slowing?"."""
    epileptiform: bool
    """Answer to "is there epileptiform activity?"."""
    description: str
    """Answer to "describe this eeg."."""
    centre: tuple[str, ...]
    """Electrodes whose mean position is the centre of the source."""
    spread: float = SPATIAL_SPREAD_M
    """Width (metres) of the source's Gaussian scalp topography."""


CLASSES = (
    ActivityClass(
        "alpha rest", "alpha", "occipital", "neither", False,
        "a posterior alpha rhythm near 10 hz, as in relaxed wakefulness with eyes closed", ("O1", "O2"),
    ),
    ActivityClass(
        "beta activity", "beta", "frontocentral", "neither", False,
        "low amplitude fast beta activity over the frontocentral channels", ("F3", "F4", "C3", "C4"),
    ),
    ActivityClass(
        "theta activity", "theta", "frontal midline", "neither", False,
        "frontal midline theta near 6 hz", ("Fz", "Cz"),
    ),
    ActivityClass(
        "spike and wave", "spike and wave", "generalised", "neither", True,
        "generalised 3 hz spike and wave discharges", ("Fz", "Cz", "F3", "F4"), spread=0.12,
    ),
    ActivityClass(
        "left slowing", "delta", "left temporal", "left", False,
        "polymorphic delta slowing over the left temporal region", ("T7", "C3", "P7"),
    ),
    ActivityClass(
        "right slowing", "delta", "right temporal", "right", False,
        "polymorphic delta slowing over the right temporal region", ("T8", "C4", "P8"),
    ),
)  # fmt: skip
CLASS_NAMES = tuple(c.name for c in CLASSES)

ACTIVITY_QUESTION = "what activity does this eeg show?"
QUESTIONS = (
    (ACTIVITY_QUESTION, lambda c: c.name),
    ("what is the dominant rhythm?", lambda c: c.rhythm),
    ("where is the activity strongest?", lambda c: c.region),
    ("which side shows slowing?", lambda c: c.side),
    ("is there epileptiform activity?", lambda c: "yes" if c.epileptiform else "no"),
    ("describe this eeg.", lambda c: c.description),
)


@cache
def montage_positions() -> dict[str, np.ndarray]:
    """Head positions (metres) of the 19 channels in mne's standard 10-20 montage."""
    positions = standard_montage("standard_1020").get_positions()["ch_pos"]
    return {name: np.asarray(positions[name], dtype=float) for name in CHANNELS_10_20}


def pink_noise(rng: np.random.Generator, channels: int, samples: int) -> np.ndarray:
    """Unit-variance 1/f noise (channels, samples), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal((channels, samples)), axis=-1)
    frequencies = np.fft.rfftfreq(samples)
    spectrum[:, 1:] /= np.sqrt(frequencies[1:])
    spectrum[:, 0] = 0
    noise = np.fft.irfft(spectrum, n=samples, axis=-1)
    return noise / noise.std(axis=-1, keepdims=True)


def topography(activity: ActivityClass, channels: tuple[str, ...]) -> np.ndarray:
    """Gain (C,) of each channel for a source centred on `activity.centre`."""
    positions = montage_positions()
    centre = np.mean([positions[name] for name in activity.centre], axis=0)
    distances = np.array([np.linalg.norm(positions[name] - centre) for name in channels])
    return np.exp(-(distances**2) / (2 * activity.spread**2))


def _rhythm(rng: np.random.Generator, times: np.ndarray, low: float, high: float) -> np.ndarray:
    """A sinusoid of random frequency in [low, high] with a slowly waxing and waning envelope."""
    frequency = rng.uniform(low, high)
    envelope = 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * times + rng.uniform(0, 2 * np.pi))
    return envelope * np.sin(2 * np.pi * frequency * times + rng.uniform(0, 2 * np.pi))


def _polymorphic_delta(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    waves = sum(rng.uniform(0.5, 1) * np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * times + rng.uniform(0, 2 * np.pi)) for _ in range(3))
    return waves / np.abs(waves).max()


def _spike_and_wave(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    """3 Hz complexes (a sharp negative spike, then a slow positive wave) in one burst."""
    duration = times[-1]
    burst_start = rng.uniform(0, 0.3 * duration)
    burst_end = burst_start + rng.uniform(0.6, 0.95) * (duration - burst_start)
    signal = np.zeros_like(times)
    for onset in np.arange(burst_start, burst_end, 1 / rng.uniform(2.5, 3.5)):
        signal -= np.exp(-((times - onset) ** 2) / (2 * 0.012**2))
        signal += 0.6 * np.exp(-((times - onset - 0.15) ** 2) / (2 * 0.06**2))
    return signal


SOURCES = {
    "alpha rest": (lambda rng, t: _rhythm(rng, t, 8.5, 12.0), (25.0, 40.0)),
    "beta activity": (lambda rng, t: _rhythm(rng, t, 16.0, 26.0), (10.0, 16.0)),
    "theta activity": (lambda rng, t: _rhythm(rng, t, 4.5, 7.0), (25.0, 35.0)),
    "spike and wave": (_spike_and_wave, (80.0, 120.0)),
    "left slowing": (lambda rng, t: _polymorphic_delta(rng, t), (30.0, 50.0)),
    "right slowing": (lambda rng, t: _polymorphic_delta(rng, t), (30.0, 50.0)),
}
"""Class name -> (waveform generator, amplitude range in microvolts)."""


def simulate_recording(
    activity: ActivityClass, seconds: float, rng: np.random.Generator, channels: tuple[str, ...] = CHANNELS_10_20
) -> Any:
    """One simulated recording of `activity` as an mne `RawArray` (montage set). All 19
    channels are simulated, then `channels` picked: a subset is the same recording
    with fewer electrodes."""
    mne = import_mne()
    samples = round(seconds * SIMULATION_SFREQ)
    times = np.arange(samples) / SIMULATION_SFREQ
    background = rng.uniform(4.0, 8.0) * pink_noise(rng, len(CHANNELS_10_20), samples)
    background += rng.uniform(2.0, 6.0) * np.outer(topography(CLASSES[0], CHANNELS_10_20), _rhythm(rng, times, 8.5, 12.0))
    waveform, (low, high) = SOURCES[activity.name]
    signal = rng.uniform(low, high) * np.outer(topography(activity, CHANNELS_10_20), waveform(rng, times))
    line = rng.uniform(5.0, 20.0) * np.sin(2 * np.pi * LINE_FREQUENCY * times + rng.uniform(0, 2 * np.pi))
    drift = rng.uniform(-30.0, 30.0, size=(len(CHANNELS_10_20), 1)) * times / seconds
    data = (background + signal + line + drift) * 1e-6  # volts
    raw = mne.io.RawArray(data, _info_10_20(), copy="info")
    return raw if tuple(channels) == CHANNELS_10_20 else raw.pick(list(channels))


@cache
def _info_10_20() -> Any:
    """Measurement info of the 19 channels with the montage set (built once, copied per recording)."""
    info = import_mne().create_info(list(CHANNELS_10_20), SIMULATION_SFREQ, "eeg")
    info.set_montage(standard_montage("standard_1020"))
    return info


@dataclass(frozen=True)
class SimulatedItem:
    """What the data set draws for index i: class, channels, and one question."""

    activity: ActivityClass
    channels: tuple[str, ...]
    question: str
    answer: str


def draw_item(
    seed: int, split: str, index: int, question: str = "all", channel_dropout: float = 0.0, min_channels: int = 8
) -> SimulatedItem:
    """The (deterministic) content of item `index`: classes cycle so every class is
    equally frequent; a random channel subset with probability `channel_dropout`."""
    rng = random.Random(f"eeg_sim/{seed}/{split}/{index}")
    activity = CLASSES[index % len(CLASSES)]
    channels = CHANNELS_10_20
    if rng.random() < channel_dropout:
        count = rng.randint(min_channels, len(CHANNELS_10_20) - 1)
        channels = tuple(name for name in CHANNELS_10_20 if name in set(rng.sample(CHANNELS_10_20, count)))
    if question == "all":
        text, answer_of = rng.choice(QUESTIONS)
    else:
        text, answer_of = QUESTIONS[0]
    return SimulatedItem(activity, channels, text, answer_of(activity))


def recording_for(seed: int, split: str, index: int, item: SimulatedItem, seconds: float) -> Any:
    """The simulated recording of item `index` (its own random stream)."""
    numpy_seed = random.Random(f"eeg_sim/signal/{seed}/{split}/{index}").getrandbits(63)
    return simulate_recording(item.activity, seconds, np.random.default_rng(numpy_seed), item.channels)
