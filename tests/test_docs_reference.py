"""The generated reference pages (recipe keys, command line, hooks) match the code, every
key, argument and hook is documented, and every hook's minimal example works."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import modal_core
from modal_core.cli import build_parser, main
from modal_core.config.schema import Recipe, _key
from modal_core.data.segments import Sample
from modal_core.errors import DataError
from modal_core.plugins import PluginManager

REPO = Path(__file__).resolve().parent.parent


def _load_generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "scripts" / "docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look their module up
    spec.loader.exec_module(module)
    return module


reference = _load_generator()


def test_generated_pages_are_current():
    stale = reference.stale_pages()
    assert not stale, f"stale generated docs {[str(p.relative_to(REPO)) for p in stale]}: run `python scripts/docs_reference.py`"


# -- recipe keys --------------------------------------------------------------------------------
def undocumented_keys(cls: type) -> list[str]:
    return [key for key, _, field in reference.schema_keys(cls) if len(field.metadata.get("help", "").strip()) < 3]


def test_every_recipe_key_has_help():
    assert not undocumented_keys(Recipe), "give these schema fields a help text with _key(default, help)"


@dataclasses.dataclass
class _Inner:
    documented: int = _key(1, "A documented key.")
    bare: int = 2


@dataclasses.dataclass
class _Outer:
    inner: _Inner = _key(help="A section.", factory=_Inner)


def test_an_undocumented_key_is_caught():
    assert undocumented_keys(_Outer) == ["inner.bare"]


def test_key_table_rows_carry_the_schema_values():
    rows = {
        match.group(1): [cell.strip() for cell in line.split("|")[2:-1]]
        for line in reference.recipe_key_table().splitlines()
        if (match := re.match(r"\| `([^`]+)` \|", line))
    }
    assert set(rows) == {key for key, _, _ in reference.schema_keys()}
    assert rows["output_dir"] == ["str", "required", "Directory for checkpoints, logs and the resolved recipe."]
    assert rows["data.sources"][:2] == ["list of sections", "`[]`"]
    assert rows["data.sources[*].weight"][:2] == ["float", "`1.0`"]
    assert rows["tokenizer.path"][:2] == ["str or null", "`null`"]
    assert rows["optim.betas"][:2] == ["list[float]", "`[0.9, 0.95]`"]
    assert rows["trainer"][:2] == ["section", "—"]


def test_recipes_page_explains_every_top_level_key_above_the_table():
    prose = reference.RECIPES_PAGE.read_text(encoding="utf-8").split(reference.TABLE_START, 1)[0]
    missing = [field.name for field in dataclasses.fields(Recipe) if f"`{field.name}`" not in prose]
    assert not missing, f"docs/recipes.md: explain the top-level keys {missing} above the reference"


# -- command line ---------------------------------------------------------------------------------
def _all_actions(parser: argparse.ArgumentParser, path: str = "modal-core"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_command_and_argument_has_help():
    parser = build_parser(reference.shipped_plugin_manager())
    bare = [f"{path} {action.option_strings or action.dest}" for path, action in _all_actions(parser) if not action.help]
    assert not bare, f"arguments without help: {bare}"
    commands, helps = reference._subcommands(parser)
    assert not [name for name in commands if not helps.get(name)]
    page = reference.CLI_PAGE.read_text(encoding="utf-8")
    assert all(f"## modal-core {name}\n" in page for name in commands)
    cfg_row = "| `--cfg CFG` | classifier-free guidance scale (default: the checkpoint's, from its recipe's generation: section; Janus: 5)"
    assert cfg_row in page


# -- hooks -------------------------------------------------------------------------------------------
def _example(hook: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    path = REPO / "examples" / "hooks" / f"{hook}.py"
    spec = importlib.util.spec_from_file_location(f"hook_example_{hook}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def _check_modalities(plugins: PluginManager, capsys) -> None:
    spec = plugins.modality("vector")
    options = spec.options(size=4)
    payload = spec.build_processor(options)([1.0, 2.0, 3.0, 4.0])
    features = spec.build_encoder(options).encode(payload.unsqueeze(0))  # (1, 1, 4)
    torch.testing.assert_close(features.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    assert spec.build_adapter(options, 8)(features).shape == (1, spec.num_positions(options), 8)
    with pytest.raises(DataError, match="3 numbers, expected 4"):
        spec.build_processor(options)([1.0, 2.0, 3.0])


def _check_datasets(plugins: PluginManager, capsys) -> None:
    data = plugins.datasets()["greetings"]({"repeat": 2}, 0, "train")
    assert len(data) == 8 and all(isinstance(sample, Sample) for sample in data)
    assert data[1].segments[0].text.startswith("Hello, Grace!")


def _check_evaluators(plugins: PluginManager, capsys) -> None:
    layer = nn.Linear(2, 3)
    layer.bias.requires_grad_(False)
    metrics = plugins.evaluators()["model_size"](types.SimpleNamespace(model=layer), {}, Path("unused"))
    assert metrics == {"parameters": 9, "trainable": 6}


def _check_commands(plugins: PluginManager, capsys) -> None:
    assert main(["count-samples", "greetings", "repeat=3"], plugins=plugins) == 0
    assert "greetings: 12 samples" in capsys.readouterr().out


def _check_block_classes(plugins: PluginManager, capsys) -> None:
    assert nn.TransformerEncoderLayer in plugins.block_classes()


def _check_rewards(plugins: PluginManager, capsys) -> None:
    from PIL import Image

    reward = plugins.rewards()["brightness"]({}, None)
    assert reward(["a", "b"], [Image.new("RGB", (2, 2), (255, 255, 255)), Image.new("RGB", (2, 2), (51, 51, 51))], [{}, {}]) == [1.0, 0.2]


CHECKS = {
    "modal_core_modalities": _check_modalities,
    "modal_core_datasets": _check_datasets,
    "modal_core_evaluators": _check_evaluators,
    "modal_core_commands": _check_commands,
    "modal_core_block_classes": _check_block_classes,
    "modal_core_rewards": _check_rewards,
}


def test_every_hook_has_a_checked_example():
    hooks = [name for name, _ in reference.hookspecs()]
    assert sorted(hooks) == sorted(CHECKS), "a new hook needs examples/hooks/<hook>.py and a check in this test"
    page = reference.HOOKS_PAGE.read_text(encoding="utf-8")
    for hook in hooks:
        assert f"## {hook}\n" in page and reference.hook_prose(getattr(modal_core.hookspecs, hook)) in page


@pytest.mark.parametrize("hook", sorted(CHECKS))
def test_hook_example_works(hook, monkeypatch, capsys):
    plugins = PluginManager(load_entry_points=False)
    plugins.register(_example(hook, monkeypatch), name=hook)
    if hook == "modal_core_commands":  # the example command counts the samples of the data set example
        plugins.register(_example("modal_core_datasets", monkeypatch), name="modal_core_datasets")
    CHECKS[hook](plugins, capsys)
    assert not plugins.failures, plugins.failures


# -- Python API ---------------------------------------------------------------------------------------
def test_api_page_documents_every_public_name():
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: ([\w.]+)", page, re.MULTILINE))
    missing = []
    for name in modal_core.__all__:
        if name == "__version__":
            continue
        module = modal_core._EXPORTS[name]
        if f"{module}.{name}" not in documented and module not in documented:
            missing.append(f"{module}.{name}")
    assert not missing, f"docs/api.md: add `::: NAME` for {missing}"
