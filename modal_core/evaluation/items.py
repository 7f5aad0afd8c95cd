"""Resumable per-item scoring: every scored item is appended to `items.jsonl` as soon as
its batch is done, and a rerun into the same folder skips the items already there.

An evaluator lists its items, says how to name one (a stable id) and how to score a
batch of them; `score_items` does the rest (batching, progress bar, skipping, saving)::

    results = ItemResults(out_dir)
    records = score_items(questions, key=lambda q: q["id"], score=ask_model, results=results, batch_size=16)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from modal_core.errors import EvaluationError

ITEMS_FILE = "items.jsonl"
Item = TypeVar("Item")


class ItemResults:
    """The per-item results file of one evaluation folder, keyed by item id."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / ITEMS_FILE
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    if number == len(lines):  # a run killed mid-write leaves a torn last line
                        break
                    raise EvaluationError(f"{self.path}:{number}: not valid JSON ({error.msg}); delete the file to start over") from error
                self.records[str(record["id"])] = record

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        """Append `records` (each with an ``"id"``) to the file and flush it to disk."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                self.records[str(record["id"])] = record
            handle.flush()
            os.fsync(handle.fileno())


def score_items(
    items: Sequence[Item],
    key: Callable[[Item], str],
    score: Callable[[list[Item]], list[dict[str, Any]]],
    results: ItemResults,
    batch_size: int,
    description: str = "scoring",
) -> list[dict[str, Any]]:
    """Score every item not yet in `results`, `batch_size` at a time, and return the
    records of all `items` in their order.

    `score(batch)` returns one JSON-serialisable record per item of the batch; its
    ``"id"`` is set to `key(item)`. Records are saved after every batch, so an
    interrupted run loses at most one batch.
    """
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    keys = [str(key(item)) for item in items]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise EvaluationError(f"item id {duplicate!r} occurs more than once; every item needs its own id")
    todo = [(k, item) for k, item in zip(keys, items) if k not in results]
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=description, unit="item") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            records = score([item for _, item in chunk])
            if len(records) != len(chunk):
                raise EvaluationError(f"scorer returned {len(records)} records for a batch of {len(chunk)}")
            results.add([{**record, "id": k} for (k, _), record in zip(chunk, records)])
            bar.update(len(chunk))
    return [results.records[k] for k in keys]
