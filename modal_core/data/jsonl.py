"""Reading JSONL data files with errors that name the file and line.

Lines are parsed when their item is read, not when the file is opened: a malformed
line is then one bad sample, which `data.on_bad_sample: skip` drops and logs like a
corrupt image, instead of stopping the whole run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modal_core.errors import DataError


class JsonlRecords(Sequence):
    """The non-blank lines of a JSONL file as a sequence of records (dicts); reading a
    record raises `DataError` naming `file:line` if it is not UTF-8, not a JSON object,
    or lacks a `required` key. `required` names the keys (any value but null) or maps
    each to the type its value must have (`{"text": str}`)."""

    def __init__(self, path: str | Path, required: Sequence[str] | Mapping[str, type]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data file not found: {self.path}")
        self.required = dict(required) if isinstance(required, Mapping) else dict.fromkeys(required, object)
        # Bytes, decoded per record: a line that is not UTF-8 is one bad sample, not a failed run.
        with self.path.open("rb") as handle:
            self._lines = [(number, line) for number, line in enumerate(handle, start=1) if line.strip()]
        if not self._lines:
            raise DataError(f"{self.path}: no records")

    def __len__(self) -> int:
        return len(self._lines)

    def where(self, index: int) -> str:
        """`file:line` of record `index`, for error messages."""
        return f"{self.path}:{self._lines[index][0]}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        number, raw = self._lines[index]
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark may open the file
        except UnicodeDecodeError as error:
            raise DataError(f"{self.path}:{number}: not UTF-8 text ({error.reason} at byte {error.start} of the line)") from None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{self.path}:{number}: not valid JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise DataError(f"{self.path}:{number}: expected a JSON object, got {type(record).__name__}")
        missing = [key for key in self.required if key not in record]
        if missing:
            raise DataError(f"{self.path}:{number}: missing key(s) {missing}; expected {list(self.required)}")
        for key, kind in self.required.items():
            if record[key] is None or not isinstance(record[key], kind):
                expected = "a value" if kind is object else f"a JSON {_JSON_NAMES.get(kind, kind.__name__)}"
                raise DataError(f"{self.path}:{number}: {key!r} must be {expected}, got {json.dumps(record[key])}")
        return record


_JSON_NAMES = {str: "string", list: "list", dict: "object", int: "integer", float: "number"}


def read_jsonl(path: str | Path, required: Sequence[str] | Mapping[str, type]) -> JsonlRecords:
    """The records of a JSONL file, each validated when it is read."""
    return JsonlRecords(path, required)
