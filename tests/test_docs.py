"""The documentation builds without warnings and its Python snippets still fit the API
(the generated reference pages are checked by tests/test_docs_reference.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from modal_core.cli import main
from modal_core.data.segments import Sample
from modal_core.errors import DataError
from modal_core.plugins import PluginManager

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
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


# -- snippets -----------------------------------------------------------------------------
def python_blocks() -> list[tuple[str, str]]:
    """(page name, code) of every ```python block in the docs written on the page
    (blocks that include a source file with `--8<--` are that file, tested with it)."""
    return [
        (page.name, code)
        for page in sorted(DOCS.glob("*.md"))
        for code in PYTHON_BLOCK.findall(page.read_text(encoding="utf-8"))
        if not code.lstrip().startswith("--8<--")
    ]


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
    metrics = plugins.evaluators()[name](types.SimpleNamespace(model=torch.nn.Linear(2, 3)), {}, tmp_path)
    assert json.loads(json.dumps(metrics)) == {"parameters": 9, "trainable": 9}


def test_plugins_page_command_example_runs(tmp_path, capsys, monkeypatch):
    module, plugins = _example_plugin("modal_core_commands", monkeypatch)
    data = tmp_path / "notes.jsonl"
    data.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert main(["count-records", "jsonl_text", str(data)], plugins=plugins) == 0
    assert "jsonl_text: 2 samples" in capsys.readouterr().out
    assert _contributions(plugins, module).commands == ["count-records"]
