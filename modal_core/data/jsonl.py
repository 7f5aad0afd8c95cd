"""Reading JSONL data files with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modal_core.errors import DataError


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """All records of a JSONL file; each must be an object holding the `required` keys."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in required if key not in record]
            if missing:
                raise DataError(f"{path}:{number}: missing key(s) {missing}; expected {list(required)}")
            records.append(record)
    if not records:
        raise DataError(f"{path}: no records")
    return records
