"""Sequence packing: which samples share a row of the batch.

A batch keeps `data.batch_size` samples (so the stream positions that the mixture and
the data module count, and resumption, are the same with packing on or off); packing
only decides how many rows they occupy.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group the indices of `lengths` into as few bins of at most `capacity` as
    first-fit decreasing finds: longest first, each into the first bin it fits.

    Bins come in the order they were opened, each listing its indices longest first.
    A length over `capacity` is the caller's error (the collator rejects such samples
    before packing)."""
    # Hand-written: a batch holds tens of samples, and FFD is these few lines; a
    # bin-packing library would add a dependency for no gain.
    bins: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"item {index} has length {length}, over the capacity {capacity}")
        target = next((b for b, room in enumerate(free) if room >= length), None)
        if target is None:
            bins.append([index])
            free.append(capacity - length)
        else:
            bins[target].append(index)
            free[target] -= length
    return bins
