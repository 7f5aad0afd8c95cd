"""Fixtures of the EEG plugin tests."""

from __future__ import annotations

import pytest

from modal_core.plugins import PluginManager
from modal_core_eeg import plugin as eeg_plugin


@pytest.fixture
def eeg_plugins() -> PluginManager:
    """Built-ins plus the EEG plugin, registered in-process."""
    plugins = PluginManager(load_entry_points=False)
    plugins.register(eeg_plugin, name="eeg")
    return plugins


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, above all on a shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
