"""The layers of docs/architecture.md point one way: each rule fails when an import (at
module level or inside a function) crosses it, or a core file names a plugin's modality."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

from modal_core.plugins import PluginManager

PACKAGE = REPO / "modal_core"


def imports_of(path: Path, root: Path = REPO) -> set[str]:
    """Every module `path` (a file under `root`) imports, as absolute names, lazy imports included."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _crossings(sources: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    crossings = []
    for path in sources:
        for module in sorted(imports_of(path)):
            if any(module == name or module.startswith(f"{name}.") for name in forbidden):
                crossings.append(f"{path.relative_to(REPO)} imports {module}")
    return sorted(set(crossings))


def _core(*names: str) -> tuple[str, ...]:
    return tuple(f"modal_core.{name}" for name in names)


UPPER = ("assemble", "training", "generation", "evaluation", "interop", "scale", "serve", "preparation", "cli")
"""The assembler and what stands on it (floors 3 and up of docs/architecture.md)."""

RULES = {
    "the ground floor (errors, modality, hookspecs) imports no other core module": (
        [PACKAGE / "errors.py", PACKAGE / "modality.py", PACKAGE / "hookspecs.py"],
        _core(*UPPER, "config", "data", "model", "plugins", "checkpoints"),
    ),
    "plugins.py (the manager) imports no data, evaluation or higher code": (
        [PACKAGE / "plugins.py"],
        _core(*UPPER, "config", "data", "model", "checkpoints", "builtins"),
    ),
    "model/ takes tensors and plain modules": (
        _files(PACKAGE / "model"),
        _core(*UPPER, "data", "config", "plugins", "checkpoints"),
    ),
    "inference, evaluation, serving and interop never import training or Lightning": (
        [p for folder in ("generation", "evaluation", "serve", "interop") for p in _files(PACKAGE / folder)],
        (*_core("training"), "lightning", "pytorch_lightning"),
    ),
    "plugins use the public library, never the CLI or training internals": (
        _files(REPO / "plugins"),
        _core("cli", "training"),
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_layer_rule_holds(rule):
    sources, forbidden = RULES[rule]
    assert sources, f"{rule}: no files found"
    assert _crossings(sources, forbidden) == []


def test_a_lazy_relative_import_upward_is_caught(tmp_path):
    probe = tmp_path / "modal_core" / "model" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("def f():\n    from ..training import run\n    import lightning\n")
    assert {"modal_core.training", "modal_core.training.run", "lightning"} <= imports_of(probe, root=tmp_path)


def _builtin_modalities() -> tuple[set[str], set[str]]:
    """Names and CLI flags of the built-in plugins' modalities (registered in-process)."""
    import importlib

    import tomllib

    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["modal_core"]
    plugins = PluginManager(load_entry_points=False)
    for name, module in entry_points.items():
        plugins.register(importlib.import_module(module), name=name)
    specs = plugins.modalities().values()
    return {spec.name for spec in specs}, {spec.cli_flag for spec in specs if spec.cli_flag}


def test_no_core_file_names_a_builtin_plugins_modality_or_flag():
    names, flags = _builtin_modalities()
    assert names, "no built-in modalities found"
    word = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")
    mentions = []
    for path in _files(PACKAGE):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if word.search(node.value) or node.value in flags:
                    mentions.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:60]!r}")
            elif isinstance(node, ast.Name | ast.Attribute):
                identifier = node.id if isinstance(node, ast.Name) else node.attr
                if identifier in names:
                    mentions.append(f"{path.relative_to(REPO)}:{node.lineno}: {identifier}")
    assert mentions == []
