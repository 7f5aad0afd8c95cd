"""A synthetic data set to learn from and to test with: multichannel waves.

Every series repeats one waveform (sine, square, sawtooth or triangle) on all its
channels, with a per-channel phase, amplitude, offset and noise; it is slow (2 cycles
per series) or fast (6 cycles). Each item asks what the waveform is or how fast it is.
Items are drawn from (seed, split, index), so a data set is the same on every run
and the held-out split never repeats a training series.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from modal_core.data.chat import question_answer
from modal_core.data.segments import Media, Sample
from modal_core.errors import RecipeError
from torch.utils.data import Dataset

from modal_core_time_series.modality import NAME

WAVEFORMS = ("sine", "square", "sawtooth", "triangle")
SPEEDS = {"slow": 2.0, "fast": 6.0}  # cycles per series
QUESTIONS = {
    "waveform": "What waveform is this?",
    "speed": "Is this signal slow or fast?",
}
SPLITS = {"train": 0, "heldout": 1}


def draw_series(rng: np.random.Generator, waveform: str, speed: str, length: int, channels: int) -> np.ndarray:
    """One series of `waveform` at `speed`, shape (length, channels)."""
    cycles = SPEEDS[speed] * rng.uniform(0.85, 1.15)
    phase = rng.uniform(0.0, 1.0, size=channels)  # (channels,)
    t = np.arange(length)[:, None] / length * cycles + phase  # (length, channels), in cycles
    fraction = t % 1.0
    shapes = {
        "sine": np.sin(2 * np.pi * t),
        "square": np.where(fraction < 0.5, 1.0, -1.0),
        "sawtooth": 2.0 * fraction - 1.0,
        "triangle": 1.0 - 4.0 * np.abs(fraction - 0.5),
    }
    amplitude = rng.uniform(0.5, 3.0, size=channels)
    offset = rng.uniform(-2.0, 2.0, size=channels)
    noise = rng.normal(0.0, 0.05, size=(length, channels))
    return shapes[waveform] * amplitude + offset + noise * amplitude


class Waves(Dataset):
    """`size` question-answer samples about synthetic waves; `question` is `waveform`,
    `speed` or `all` (a random one per item)."""

    def __init__(self, size: int, seed: int, split: str, length: int = 64, channels: int = 3, question: str = "all") -> None:
        if split not in SPLITS:
            raise RecipeError(f"time series waves: unknown split {split!r}; expected one of {sorted(SPLITS)}")
        if question != "all" and question not in QUESTIONS:
            raise RecipeError(f"time series waves: options.question must be 'all' or one of {sorted(QUESTIONS)}, got {question!r}")
        if size <= 0:
            raise RecipeError(f"time series waves: options.size must be positive, got {size}")
        self.size, self.seed, self.split = size, seed, split
        self.length, self.channels, self.question = length, channels, question

    def __len__(self) -> int:
        return self.size

    def item(self, index: int) -> tuple[str, str, np.ndarray]:
        """(question kind, answer, series) of item `index`."""
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        waveform = WAVEFORMS[rng.integers(len(WAVEFORMS))]
        speed = sorted(SPEEDS)[rng.integers(len(SPEEDS))]
        kind = self.question if self.question != "all" else sorted(QUESTIONS)[rng.integers(len(QUESTIONS))]
        series = draw_series(rng, waveform, speed, self.length, self.channels)
        return kind, waveform if kind == "waveform" else speed, series

    def __getitem__(self, index: int) -> Sample:
        kind, answer, series = self.item(index)
        return question_answer(QUESTIONS[kind], answer, media=[Media(NAME, series)])


WAVES_OPTIONS = ("size", "length", "channels", "question")


def waves(options: dict[str, Any], seed: int, split: str) -> Waves:
    """Factory of the `time_series_waves` data set (options: size, length, channels, question)."""
    unknown = sorted(set(options) - set(WAVES_OPTIONS))
    if unknown:
        raise RecipeError(f"time_series_waves: unknown options {unknown}; expected some of {list(WAVES_OPTIONS)}")
    return Waves(seed=seed, split=split, **{"size": 2000, **options})


def waves_text(options: dict[str, Any], seed: int, split: str) -> Waves:
    """The same samples as a tokenizer corpus (`tokenizer.train.corpus`): the
    tokenizer trainer passes `num_sentences`."""
    options = dict(options)
    return waves({"size": options.pop("num_sentences", 2000), **options}, seed, split)
