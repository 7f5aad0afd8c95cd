"""The task mix: several data sets sampled by weight as one endless, resumable stream.

Item k of the stream is a pure function of (seed, k): which source it comes from, which
item of that source, and whether its generation condition is dropped for CFG. Resuming
at step s therefore only needs the stream to restart at k = s * samples_per_step.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import replace

from torch.utils.data import Dataset, Sampler

from modal_core.data.bad_samples import BadSamplePolicy
from modal_core.data.segments import Media, Sample
from modal_core.errors import DataError, RecipeError

MAX_DRAWS = 100
TOO_MANY_BAD = f"{MAX_DRAWS} draws in a row from data.sources were bad; see the bad-sample log"


class WeightedSources:
    """The recipe's data sources, `(name, data set, weight)`, checked, with the mix's
    seed, CFG drop and bad-sample policy: what the map-style and the streaming mix share."""

    def __init__(
        self,
        sources: Sequence[tuple[str, object, float]],
        seed: int,
        cfg_dropout: float = 0.0,
        output_modalities: frozenset[str] = frozenset(),
        bad_samples: BadSamplePolicy | None = None,
    ) -> None:
        check_sources(sources, cfg_dropout)
        self.sources = list(sources)
        self.weights = [weight for _, _, weight in sources]
        self.seed, self.cfg_dropout, self.output_modalities = seed, cfg_dropout, output_modalities
        self.bad_samples = bad_samples or BadSamplePolicy()


class MixtureDataset(WeightedSources, Dataset):
    """Endless weighted mix of data sets; index k is the k-th draw of the stream."""

    def __getitem__(self, index: int) -> Sample:
        rng = random.Random(f"{self.seed}:{index}")
        for _ in range(MAX_DRAWS):
            name, dataset, _ = rng.choices(self.sources, weights=self.weights)[0]
            item = rng.randrange(len(dataset))
            source = f"{name}[{item}]"
            if self.bad_samples.known_bad(source):
                continue  # the same draws follow as if it were read and failed again
            try:
                sample = dataset[item]
                break
            except DataError as error:  # skipped: draw again, deterministically
                self.bad_samples.handle(source, error)
        else:
            raise DataError(TOO_MANY_BAD)
        return with_condition_drop(sample, rng, self.cfg_dropout, self.output_modalities, name)


def check_sources(sources: Sequence[tuple[str, object, float]], cfg_dropout: float) -> None:
    """Fail on an empty mix, a negative or all-zero weight, an empty map-style data set,
    or a `cfg_dropout` outside [0, 1]."""
    if not sources:
        raise RecipeError("data.sources is empty: name at least one data set")
    for name, dataset, weight in sources:
        if weight < 0:
            raise RecipeError(f"data.sources: weight of {name!r} must be >= 0, got {weight}")
        if hasattr(dataset, "__len__") and len(dataset) == 0:
            raise RecipeError(f"data.sources: data set {name!r} is empty")
    if sum(weight for _, _, weight in sources) <= 0:
        raise RecipeError("data.sources: the weights must not all be zero")
    if not 0.0 <= cfg_dropout <= 1.0:
        raise RecipeError(f"data.cfg_dropout must be within [0, 1], got {cfg_dropout}")


def with_condition_drop(sample: Sample, rng: random.Random, cfg_dropout: float, output_modalities: frozenset[str], name: str) -> Sample:
    """`sample` with its generation condition dropped with probability `cfg_dropout` (drawn
    from `rng`, so the drop is part of the deterministic stream) and its source set."""
    generates = any(isinstance(s, Media) and s.supervised and s.modality in output_modalities for s in sample.segments)
    drop = generates and rng.random() < cfg_dropout
    return replace(sample, drop_condition=drop, source=sample.source or name)


class StreamSampler(Sampler[int]):
    """Yields stream positions start + offset, start + offset + stride, ... forever."""

    def __init__(self, start: int = 0, stride: int = 1, offset: int = 0) -> None:
        self.start, self.stride, self.offset = start, stride, offset

    def __iter__(self) -> Iterator[int]:
        index = self.start + self.offset
        while True:
            yield index
            index += self.stride
