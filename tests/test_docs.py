"""The documentation builds without warnings, its recipe key reference matches the
schema, and its Python snippets still fit the API."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from modal_core.cli import main
from modal_core.config.schema import Recipe
from modal_core.data.segments import Sample
from modal_core.errors import DataError
from modal_core.plugins import PluginManager

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
RECIPES_PAGE = DOCS / "recipes.md"
TABLE_START, TABLE_END = "<!-- recipe-keys:start -->", "<!-- recipe-keys:end -->"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_docs_build_strict(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (site / "index.html").is_file()


# -- the recipe key reference -----------------------------------------------------------
def schema_keys(cls: type = Recipe, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """Every recipe key as (dotted name, type, field), sections before their keys;
    items of a list of sections are written `name[*].key`."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key, hint = prefix + field.name, hints[field.name]
        yield key, hint, field
        if dataclasses.is_dataclass(hint):
            yield from schema_keys(hint, key + ".")
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            yield from schema_keys(typing.get_args(hint)[0], key + "[*].")


def type_name(hint: Any) -> str:
    """How the reference table writes a key's type."""
    if dataclasses.is_dataclass(hint):
        return "section"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        return f"{type_name(rest[0])} or null"
    if origin is list:
        item = args[0] if args else Any
        return "list of sections" if dataclasses.is_dataclass(item) else f"list[{type_name(item)}]"
    if origin is dict:
        return "mapping"
    if hint is Any:
        return "any"
    return hint.__name__


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def default_text(field: dataclasses.Field) -> str:
    """How the reference table writes a key's default."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        return "—" if dataclasses.is_dataclass(value) else f"`{_yaml_value(value)}`"
    if field.default == "???":
        return "required"
    return f"`{_yaml_value(field.default)}`"


def expected_row(key: str, hint: Any, field: dataclasses.Field) -> str:
    return f"| `{key}` | {type_name(hint)} | {default_text(field)} | {field.metadata.get('help', '')} |"


def _normalise(row: str) -> str:
    return " ".join(row.split())


def documented_rows() -> dict[str, str]:
    """Key -> row of the reference table in docs/recipes.md."""
    text = RECIPES_PAGE.read_text(encoding="utf-8")
    assert TABLE_START in text and TABLE_END in text, f"{RECIPES_PAGE} lost its {TABLE_START} ... {TABLE_END} markers"
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if match:
            rows[match.group(1)] = _normalise(line)
    return rows


def test_every_recipe_key_is_documented():
    rows = documented_rows()
    expected = {key: expected_row(key, hint, field) for key, hint, field in schema_keys()}
    wrong = [row for key, row in expected.items() if rows.get(key) != _normalise(row)]
    stale = sorted(set(rows) - set(expected))
    assert not wrong, "docs/recipes.md: add or correct these rows of the key reference:\n" + "\n".join(wrong)
    assert not stale, f"docs/recipes.md documents keys the schema does not have: {stale}"


def test_every_top_level_section_is_explained():
    text = RECIPES_PAGE.read_text(encoding="utf-8").split(TABLE_START, 1)[0]
    for field in dataclasses.fields(Recipe):
        assert f"`{field.name}`" in text, f"docs/recipes.md: explain the top-level key `{field.name}` above the reference"


# -- snippets -----------------------------------------------------------------------------
def python_blocks() -> list[tuple[str, str]]:
    """(page name, code) of every ```python block in the docs."""
    return [(page.name, code) for page in sorted(DOCS.glob("*.md")) for code in PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))]


def test_python_snippets_compile():
    blocks = python_blocks()
    assert blocks
    for page, code in blocks:
        compile(code, f"<{page} snippet>", "exec", dont_inherit=True)


def _example_plugin(hook: str, monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, PluginManager]:
    """The example of `hook` on docs/plugins.md, run as a module and registered."""
    [code] = [code for page, code in python_blocks() if page == "plugins.md" and f"def {hook}(" in code]
    module = types.ModuleType(f"docs_example_{hook}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    exec(compile(code, f"<plugins.md: {hook}>", "exec", dont_inherit=True), module.__dict__)
    plugins = PluginManager(load_entry_points=False)
    plugins.register(module)
    return module, plugins


def _contributions(plugins: PluginManager, module: types.ModuleType):
    [info] = [info for info in plugins.describe() if info.name == module.__name__]
    assert not plugins.failures, plugins.failures
    return info


def test_plugins_page_modality_example_builds(monkeypatch):
    module, plugins = _example_plugin("modal_core_modalities", monkeypatch)
    [name] = _contributions(plugins, module).modalities
    spec = plugins.modality(name)
    options = spec.options()
    count = spec.num_positions(options)
    payload = spec.build_processor(options)(torch.zeros(count, options.channels).numpy())
    features = spec.build_encoder(options).encode(payload.unsqueeze(0))
    embeddings = spec.build_adapter(options, 32)(features)
    assert embeddings.shape == (1, count, 32)
    with pytest.raises(DataError, match="expected"):
        spec.build_processor(options)(torch.zeros(count + 1, options.channels).numpy())


def test_plugins_page_dataset_example_yields_samples(tmp_path, monkeypatch):
    module, plugins = _example_plugin("modal_core_datasets", monkeypatch)
    [name] = _contributions(plugins, module).datasets
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"reading": "r.npy", "question": "Moving?", "answer": "Yes."}) + "\n")
    dataset = plugins.datasets()[name]({"path": str(data)}, 0, "train")
    assert len(dataset) == 1 and isinstance(dataset[0], Sample)


def test_plugins_page_evaluator_example_returns_metrics(tmp_path, monkeypatch):
    module, plugins = _example_plugin("modal_core_evaluators", monkeypatch)
    [name] = _contributions(plugins, module).evaluators
    metrics = plugins.evaluators()[name](torch.nn.Linear(2, 3), {}, tmp_path)
    assert json.loads(json.dumps(metrics)) == {"parameters": 9, "trainable": 9}


def test_plugins_page_command_example_runs(tmp_path, capsys, monkeypatch):
    module, plugins = _example_plugin("modal_core_commands", monkeypatch)
    data = tmp_path / "notes.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert main(["count-records", "jsonl_text", str(data)], plugins=plugins) == 0
    assert "jsonl_text: 2 samples" in capsys.readouterr().out
    assert _contributions(plugins, module).commands == ["count-records"]
