"""Fixtures of the Janus conversion tests: one tiny transformers Janus, converted once per module."""

from __future__ import annotations

import pytest

import modal_core_image_understanding.plugin as understanding_plugin
import modal_core_images.plugin as images_plugin
import modal_core_vq_generation.plugin as generation_plugin
from modal_core.plugins import PluginManager
from modal_core_images.janus import from_hf_janus

from .tiny_janus import save_tiny_janus


@pytest.fixture(scope="module")
def janus_plugins():
    """The two image modalities, and the images plugin for `modal-core convert` / `export`."""
    manager = PluginManager(load_entry_points=False)
    manager.register(images_plugin, name="images")
    manager.register(understanding_plugin, name="image_understanding")
    manager.register(generation_plugin, name="vq_generation")
    return manager


@pytest.fixture(scope="module")
def converted(tmp_path_factory, janus_plugins):
    """(transformers model, its folder, the modal-core checkpoint converted from it)."""
    root = tmp_path_factory.mktemp("janus")
    reference = save_tiny_janus(root / "hf")
    from_hf_janus(root / "hf", root / "modal", plugins=janus_plugins)
    return reference, root / "hf", root / "modal"
