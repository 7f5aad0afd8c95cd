"""The metrics log of a run (`history.jsonl`): one JSON record per logged step.

Kept apart from the training callbacks so reports and plots read it without importing
Lightning."""

from __future__ import annotations

import json
from pathlib import Path


def read_history(path: Path) -> list[dict[str, float]]:
    """The metrics log, one record per (step, kind); a resumed run's later records win."""
    records: dict[tuple[int, bool], dict[str, float]] = {}
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            is_val = any(key.startswith("val/") for key in record)
            records[(record["step"], is_val)] = record
    return [records[key] for key in sorted(records)]
