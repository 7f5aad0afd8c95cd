"""JSONL data: bytes that are not UTF-8, fields of the wrong type and nulls are bad samples
named by file and line (skipped and logged under `on_bad_sample: skip`); a byte-order
mark is accepted."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_text_recipe, write_recipe

from modal_core.checkpoints.run_folder import BAD_SAMPLES_FILE
from modal_core.config.loader import load_recipe
from modal_core.data.jsonl import read_jsonl
from modal_core.errors import DataError
from modal_core.training.run import train


def _write(path, lines: list[bytes]) -> str:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_each_bad_line_is_named_and_the_good_ones_read(tmp_path):
    path = _write(
        tmp_path / "d.jsonl",
        [b'\xef\xbb\xbf{"text": "first"}', b'{"text": "caf\xe9"}', b'{"text": null}', b'{"text": 5}', b'{"text": "last"}'],
    )
    records = read_jsonl(path, required={"text": str})
    assert records[0] == {"text": "first"} and records[4] == {"text": "last"}
    with pytest.raises(DataError, match=rf"{path}:2: not UTF-8 text \(invalid continuation byte at byte 13 of the line\)"):
        records[1]
    with pytest.raises(DataError, match=rf"{path}:3: 'text' must be a JSON string, got null"):
        records[2]
    with pytest.raises(DataError, match=rf"{path}:4: 'text' must be a JSON string, got 5"):
        records[3]


def test_a_null_is_refused_even_where_any_type_is_allowed(tmp_path):
    records = read_jsonl(_write(tmp_path / "d.jsonl", [b'{"answers": null}']), required=("answers",))
    with pytest.raises(DataError, match="'answers' must be a value, got null"):
        records[0]


def test_bad_lines_are_skipped_and_logged_when_training(tmp_path, plugins):
    lines = [json.dumps({"text": f"a red circle number {i}"}).encode() for i in range(6)]
    lines[1], lines[4] = b'{"text": "caf\xe9"}', b'{"text": null}'
    data = _write(tmp_path / "corpus.jsonl", lines)
    recipe = tiny_text_recipe(
        tmp_path / "run",
        data={"sources": [{"dataset": "jsonl_text", "options": {"path": data}}], "on_bad_sample": "skip"},
        trainer={"max_steps": 4},
    )
    result = train(load_recipe(write_recipe(tmp_path / "r.yaml", recipe), [], plugins), plugins)
    logged = [json.loads(line) for line in (result.run_dir / BAD_SAMPLES_FILE).read_text().splitlines()]
    reasons = {entry["reason"] for entry in logged}
    assert any(f"{data}:2: not UTF-8 text" in reason for reason in reasons)
    assert any(f"{data}:5: 'text' must be a JSON string, got null" in reason for reason in reasons)
