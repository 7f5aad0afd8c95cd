"""Reading JSONL data files (and JSON lists of records) with errors that name the file
and line (`file:line`) or record (`file[index]`).

Records are checked when their item is read, not when the file is opened: a malformed
record is then one bad sample, which `data.on_bad_sample: skip` drops and logs like a
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
        return _checked(record, self.where(index), self.required)


class JsonArrayRecords(Sequence):
    """The records of a JSON file holding one list (LLaVA's format), with the checks of
    `JsonlRecords`; errors name `file[index]`. The whole file is parsed when opened (a
    list cannot be read record by record), but text that is not UTF-8 fails only the
    records that hold it."""

    def __init__(self, path: str | Path, required: Sequence[str] | Mapping[str, type]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data file not found: {self.path}")
        self.required = dict(required) if isinstance(required, Mapping) else dict.fromkeys(required, object)
        # Undecodable bytes become lone surrogates, found again when their record is read.
        text = self.path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{self.path}:{error.lineno}: not valid JSON ({error.msg} at column {error.colno})") from error
        if not isinstance(records, list):
            raise DataError(f"{self.path}: expected a JSON list of records, got a JSON {_JSON_NAMES.get(type(records), 'value')}")
        if not records:
            raise DataError(f"{self.path}: no records")
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def where(self, index: int) -> str:
        """`file[index]` of record `index`, for error messages."""
        return f"{self.path}[{index}]"

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self._records[index]
        if not _is_utf8(record):
            raise DataError(f"{self.where(index)}: not UTF-8 text")
        return _checked(record, self.where(index), self.required)


def _is_utf8(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_is_utf8(key) and _is_utf8(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_is_utf8(item) for item in value)
    return True


def _checked(record: Any, where: str, required: dict[str, type]) -> dict[str, Any]:
    """`record` if it is a JSON object with every `required` key of the right type."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in required if key not in record]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; expected {list(required)}")
    for key, kind in required.items():
        if record[key] is None or not isinstance(record[key], kind):
            expected = "a value" if kind is object else f"a JSON {_JSON_NAMES.get(kind, kind.__name__)}"
            raise DataError(f"{where}: {key!r} must be {expected}, got {json.dumps(record[key])}")
    return record


_JSON_NAMES = {str: "string", list: "list", dict: "object", int: "integer", float: "number"}


def read_jsonl(path: str | Path, required: Sequence[str] | Mapping[str, type]) -> JsonlRecords:
    """The records of a JSONL file, each validated when it is read."""
    return JsonlRecords(path, required)


def read_records(path: str | Path, required: Sequence[str] | Mapping[str, type]) -> JsonlRecords | JsonArrayRecords:
    """The records of a JSON file holding a list, or else of a JSONL file (told apart by
    the file's first character, not its name), each validated when it is read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    with path.open("rb") as handle:
        start = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return JsonArrayRecords(path, required) if start.startswith(b"[") else JsonlRecords(path, required)
