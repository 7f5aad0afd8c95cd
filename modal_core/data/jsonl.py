"""Reading JSONL data files with errors that name the file and line.

Lines are parsed when their item is read, not when the file is opened: a malformed
line is then one bad sample, which `data.on_bad_sample: skip` drops and logs like a
corrupt image, instead of stopping the whole run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modal_core.errors import DataError


class JsonlRecords(Sequence):
    """The non-blank lines of a JSONL file as a sequence of records (dicts); reading a
    record raises `DataError` naming `file:line` if it is not a JSON object holding every
    `required` key."""

    def __init__(self, path: str | Path, required: tuple[str, ...]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data file not found: {self.path}")
        self.required = required
        with self.path.open(encoding="utf-8") as handle:
            self._lines = [(number, line) for number, line in enumerate(handle, start=1) if line.strip()]
        if not self._lines:
            raise DataError(f"{self.path}: no records")

    def __len__(self) -> int:
        return len(self._lines)

    def where(self, index: int) -> str:
        """`file:line` of record `index`, for error messages."""
        return f"{self.path}:{self._lines[index][0]}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        number, line = self._lines[index]
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{self.path}:{number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise DataError(f"{self.path}:{number}: expected a JSON object, got {type(record).__name__}")
        missing = [key for key in self.required if key not in record]
        if missing:
            raise DataError(f"{self.path}:{number}: missing key(s) {missing}; expected {list(self.required)}")
        return record


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> JsonlRecords:
    """The records of a JSONL file, each validated when it is read."""
    return JsonlRecords(path, required)
