"""What to do with a sample that cannot be used (missing or corrupt file, too long, ...):
`raise` stops with the error, `skip` drops it and appends its source and the reason to a
JSONL log, so a long run is not lost to one bad file and nothing is dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

from modal_core.errors import DataError, RecipeError

POLICIES = ("raise", "skip")


class BadSamplePolicy:
    """Raise or log-and-skip a `DataError` raised while reading or collating a sample."""

    def __init__(self, mode: str = "raise", log_path: Path | None = None) -> None:
        if mode not in POLICIES:
            raise RecipeError(f"data.on_bad_sample: expected one of {POLICIES}, got {mode!r}")
        self.mode, self.log_path = mode, log_path
        self._known_bad: set[str] = set()  # per process: each data-loader worker logs an item once

    def known_bad(self, source: str) -> bool:
        """Whether `source` was already skipped (so it need not be read again)."""
        return source in self._known_bad

    def handle(self, source: str, error: DataError) -> None:
        """Re-raise under `raise`; otherwise record the sample as skipped (logged once)."""
        if self.mode == "raise":
            raise error
        if source in self._known_bad:
            return
        self._known_bad.add(source)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as handle:  # one short line per write: safe across workers
                handle.write(json.dumps({"source": source, "reason": str(error)}) + "\n")


def read_bad_samples(path: Path) -> list[dict[str, str]]:
    """The skipped samples recorded in a run's log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).is_file() else []
