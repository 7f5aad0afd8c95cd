"""Shared fixtures. Tests never load installed entry-point plugins: they register what
they need in-process on a fresh manager."""

from __future__ import annotations

import copy
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
import yaml

from modal_core.plugins import PluginManager

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

TINY_BACKBONE = {
    "model_type": "llama",
    "config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    },
}


@pytest.fixture(scope="session", autouse=True)
def kernel_cache(tmp_path_factory):
    """Native kernels are built into pytest's temporary root, not the user's cache; that
    folder outlives the session, so later sessions find the kernel built (ninja rebuilds
    it when its source changes)."""
    from modal_core.generation.native_linear import CACHE_VARIABLE

    previous = os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = str(tmp_path_factory.getbasetemp().parent / "modal-core-kernels")
    yield
    if previous is None:
        del os.environ[CACHE_VARIABLE]
    else:
        os.environ[CACHE_VARIABLE] = previous


@pytest.fixture
def plugins() -> PluginManager:
    """A plugin manager with only the core's built-ins."""
    return PluginManager(load_entry_points=False)


def with_image_plugins(manager: PluginManager) -> PluginManager:
    """Register the image plugins in-process (shared image code with its data sets and
    suites, and the two image modalities) on `manager`, and return it."""
    import modal_core_image_understanding.plugin as understanding_plugin
    import modal_core_images.plugin as images_plugin
    import modal_core_vq_generation.plugin as generation_plugin

    manager.register(images_plugin, name="images")
    manager.register(understanding_plugin, name="image_understanding")
    manager.register(generation_plugin, name="vq_generation")
    return manager


@pytest.fixture
def image_plugins(plugins: PluginManager) -> PluginManager:
    """Built-ins plus the image plugins."""
    return with_image_plugins(plugins)


@pytest.fixture
def toy_plugins(plugins: PluginManager) -> PluginManager:
    """Built-ins plus the toy modalities of tests/toy_plugin.py."""
    import toy_plugin

    plugins.register(toy_plugin, name="toy")
    return plugins


def builtin_plugin_modules() -> dict[str, str]:
    """Entry-point name -> module of every plugin the root package ships, read from the
    `modal_core` entry points of pyproject.toml (the one list to update)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"]["modal_core"])


def builtin_plugin_manager() -> PluginManager:
    """A manager with every shipped plugin registered in-process by module, as the
    installed entry points would, but without reading what happens to be installed."""
    manager = PluginManager(load_entry_points=False)
    for name, module in builtin_plugin_modules().items():
        manager.register(importlib.import_module(module), name=name)
    return manager


@pytest.fixture
def builtin_plugins() -> PluginManager:
    """The core's built-ins and every shipped plugin, registered in-process."""
    return builtin_plugin_manager()


def tiny_text_recipe(output_dir: Path, **sections) -> dict:
    """A text-only recipe that trains in seconds."""
    recipe = {
        "description": "tiny text test recipe",
        "seed": 0,
        "output_dir": str(output_dir),
        "tokenizer": {"train": {"corpus": "shapes_text", "num_sentences": 1000, "vocab_size": 300}},
        "backbone": TINY_BACKBONE,
        "train": ["backbone"],
        "data": {"sources": [{"dataset": "shapes_text", "options": {"num_sentences": 1000}}], "batch_size": 8, "max_length": 48},
        "optim": {"lr": 3e-3, "warmup_steps": 2},
        "trainer": {"max_steps": 8, "log_every_n_steps": 1, "progress_bar": False, "accelerator": "cpu"},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe[key], **value} if isinstance(value, dict) and isinstance(recipe.get(key), dict) else value
    return recipe


def tiny_quickstart_text_overrides() -> list[str]:
    """Overrides that shrink the shipped `quickstart/text` recipe to one step at the sizes of `tiny_text_recipe`."""
    backbone = [f"backbone.config.{key}={value}" for key, value in TINY_BACKBONE["config"].items()]
    return [
        *backbone,
        "tokenizer.train.num_sentences=300",
        "tokenizer.train.vocab_size=300",
        "data.sources.0.options.num_sentences=200",
        "data.batch_size=4",
        "data.max_length=48",
        "data.val_samples=0",
        "trainer.max_steps=1",
        "trainer.checkpoint_every_n_steps=0",
        "trainer.progress_bar=false",
    ]


def tiny_image_recipe(output_dir: Path) -> dict:
    """Two training steps of a tiny model that answers about images and draws 32x32 ones
    (needs the image plugins: `with_image_plugins`)."""
    from test_image_plugins import TINY_IMAGES

    return tiny_text_recipe(
        output_dir,
        modalities=copy.deepcopy(TINY_IMAGES),  # a test that edits its recipe must not edit every later test's
        train=["backbone", "adapters", "heads"],
        data={
            "sources": [
                {"dataset": "shapes", "options": {"task": "vqa", "image_size": 32, "size": 64}},
                {"dataset": "shapes", "options": {"task": "generate", "image_size": 32, "size": 64}},
            ],
            "batch_size": 4,
            "max_length": 64,
        },
        trainer={"max_steps": 2, "log_every_n_steps": 1, "progress_bar": False, "accelerator": "cpu"},
    )


def wait_for_step(history: Path, step: int, process: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until a training subprocess's history records `step` (it must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be interrupted"
        if history.is_file() and any(json.loads(line)["step"] >= step for line in history.read_text().splitlines()):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached")


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m modal_core ARGS` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "modal_core", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def spy_on_drawing(monkeypatch) -> list:
    """Record the guidance and sampling (a `GenerationSettings`) of every code-decoding call
    of any pipeline from now on (`DecodeEngine.generate_codes`), which still draws."""
    from modal_core.generation.engine import DecodeEngine
    from modal_core.generation.settings import GenerationSettings

    calls: list = []
    draw = DecodeEngine.generate_codes

    def recording(self, *args, **kwargs):
        cfg, temperature, top_k, top_p = args[5:9]
        calls.append(GenerationSettings(cfg, kwargs["cfg_schedule"], kwargs["cfg_plausibility"], temperature, top_k, top_p))
        return draw(self, *args, **kwargs)

    monkeypatch.setattr(DecodeEngine, "generate_codes", recording)
    return calls
