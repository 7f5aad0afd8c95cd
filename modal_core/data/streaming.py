"""Streaming sources (WebDataset shards) in the task mix: disjoint shards per reader,
and a stream that resumes where it stopped.

A *reader* is one data-loader worker of one rank: `world_size * max(1, num_workers)`
readers in all, reader `rank * workers + worker`. In epoch e a streaming source's
shards are shuffled by `(seed, e)` and reader j reads every shard at positions
j, j + readers, ... of that order, so no two readers share a shard. A reader that has
read all of its shards starts its next epoch (a new shuffle); readers move on to the
next epoch independently.

Each reader's stream is a pure function of (seed, reader, readers): position p draws
its source by weight from `Random(seed, reader, p)`, a map-style source its item, a
streaming source its next record, then the CFG drop. The data loader takes whole
batches from its workers in turn (batch b from worker b mod workers), so after
`b` batches of a rank the number of samples each worker delivered is known from the
step count alone. Resuming therefore needs no saved state: each reader replays its
stream to that point (reading records and building samples, but neither decoding media
nor collating) and goes on from there, so no sample is read twice or skipped.

This is why the streaming machinery is written here rather than taken whole from a
library: webdataset splits shards by node and worker but keeps no position; litdata
resumes from a saved data-loader state but reads only its own optimized chunk format;
megatron-energon saves per-worker state but needs `energon prepare` index files next to
the shards. Replaying a deterministic stream reads plain WebDataset tars as they are
and keeps resumption tied to the step count, as the map-style mix already is.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from torch.utils.data import IterableDataset, get_worker_info

from modal_core.data.mixture import MAX_DRAWS, TOO_MANY_BAD, WeightedSources, with_condition_drop
from modal_core.data.segments import Sample
from modal_core.data.shards import BadShard, ShardRecord, list_shards, read_shard
from modal_core.errors import DataError, RecipeError


class ShardSource:
    """A streaming data set: WebDataset shards whose records `make` turns into samples.

    `make(record)` raises `DataError` (naming `record.where`) for a record it cannot use,
    e.g. a sample without its caption; the mix handles it by `data.on_bad_sample`.
    """

    def __init__(self, urls: str | Sequence[str], make: Callable[[ShardRecord], Sample], name: str) -> None:
        self.name, self.make = name, make
        self.shards = list_shards(urls, name)

    def records(self, reader: int, readers: int, seed: int) -> Iterator[ShardRecord | BadShard]:
        """Reader `reader`'s records of every epoch, endlessly; a bad shard, or the rest
        of one from a bad member on, is one `BadShard` in the stream.

        Raises:
            RecipeError: fewer shards than readers (some reader would have none).
            DataError: a whole epoch of this reader's shards held no readable record.
        """
        if len(self.shards) < readers:
            raise RecipeError(
                f"{self.name}: {len(self.shards)} shard(s) for {readers} readers (devices x nodes x max(1, data.num_workers)); "
                "each reader needs a shard of its own: write more shards or use fewer workers"
            )
        for epoch in itertools.count():
            order = list(self.shards)
            random.Random(f"{seed}:{epoch}").shuffle(order)
            readable = False
            for shard in order[reader::readers]:
                for record in read_shard(shard):
                    readable = readable or isinstance(record, ShardRecord)
                    yield record
            if not readable:
                raise DataError(f"{self.name}: no readable sample in the shards of reader {reader} of {readers}: {order[reader::readers]}")


class StreamingMixture(WeightedSources):
    """The weighted mix of map-style and streaming sources, read reader by reader."""

    def stream(self, reader: int, readers: int) -> Iterator[Sample]:
        """Reader `reader`'s samples, endlessly (see the module docstring)."""
        records = {
            index: dataset.records(reader, readers, self.seed)
            for index, (_, dataset, _) in enumerate(self.sources)
            if isinstance(dataset, ShardSource)
        }
        for position in itertools.count():
            rng = random.Random(f"{self.seed}:{reader}/{readers}:{position}")
            name, sample = self._draw(rng, records)
            yield with_condition_drop(sample, rng, self.cfg_dropout, self.output_modalities, name)

    def first(self, count: int) -> list[Sample]:
        """The first `count` samples of a single reader's stream (a fixed validation set)."""
        return list(itertools.islice(self.stream(0, 1), count))

    def _draw(self, rng: random.Random, records: dict[int, Iterator[ShardRecord | BadShard]]) -> tuple[str, Sample]:
        for _ in range(MAX_DRAWS):
            index = rng.choices(range(len(self.sources)), weights=self.weights)[0]
            name, dataset, _ = self.sources[index]
            if index in records:  # a streaming source: its next record, good or bad
                record = next(records[index])
                try:
                    if isinstance(record, BadShard):
                        raise record.error
                    sample = dataset.make(record)
                    return name, replace(sample, source=sample.source or record.where)
                except DataError as error:
                    self.bad_samples.handle(record.where, error)
                continue
            item = rng.randrange(len(dataset))
            source = f"{name}[{item}]"
            if self.bad_samples.known_bad(source):
                continue  # the same draws follow as if it were read and failed again
            try:
                return name, dataset[item]
            except DataError as error:
                self.bad_samples.handle(source, error)
        raise DataError(TOO_MANY_BAD)


def batches_delivered(batches: int, worker: int, workers: int) -> int:
    """How many of a rank's first `batches` batches worker `worker` made: the data loader
    takes batch b from worker b mod `workers`."""
    return max(0, (batches - worker + workers - 1) // workers)


class ReaderStream(IterableDataset):
    """One rank's view of a `StreamingMixture` for a `DataLoader`: each worker reads one
    reader's stream, from the sample that reader reached in the rank's first
    `batches_done` batches."""

    def __init__(self, mixture: StreamingMixture, rank: int, world: int, num_workers: int, batch_size: int, batches_done: int) -> None:
        self.mixture, self.rank, self.world = mixture, rank, world
        self.workers, self.batch_size, self.batches_done = max(1, num_workers), batch_size, batches_done

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        # A fresh loader takes its first batch from worker 0; the run's next batch is due
        # from reader `batches_done mod workers`: worker w plays reader (w + batches_done) mod workers.
        worker = ((info.id if info is not None else 0) + self.batches_done) % self.workers
        done = batches_delivered(self.batches_done, worker, self.workers) * self.batch_size
        stream = self.mixture.stream(self.rank * self.workers + worker, self.world * self.workers)
        return itertools.islice(stream, done, None)  # replays the samples already trained on
