"""The plugin manager: registration, entry points, and broken plugins."""

from __future__ import annotations

import importlib.metadata
import types

import pytest
from conftest import run_cli

import modal_core.plugins as plugin_module
from modal_core import ModalitySpec, hookimpl
from modal_core.errors import PluginError
from modal_core.plugins import PluginManager


def test_in_process_registration_contributes_modalities(toy_plugins):
    specs = toy_plugins.modalities()
    assert {"toy_vector", "toy_codes"} <= set(specs)
    assert specs["toy_codes"].direction == "output"
    assert specs["toy_vector"].special_tokens == ("<toy>", "</toy>", "<toy_slot>")
    info = {i.name: i for i in toy_plugins.describe()}
    assert info["toy"].modalities == ["toy_codes", "toy_vector"]
    assert info["modal_core.builtins"].datasets == ["conversations", "jsonl_text", "prepared", "shapes_text", "webdataset_text"]
    assert info["modal_core.builtins"].evaluators == []


def test_the_image_plugin_contributes_the_image_data_sets_suites_quickstart_and_janus_commands(image_plugins):
    import argparse

    info = {i.name: i for i in image_plugins.describe()}
    assert info["images"].datasets == [
        "hires_shapes",
        "image_conversations",
        "image_folder",
        "image_text_jsonl",
        "shapes",
        "shapes_prompts",
        "vqa_jsonl",
        "webdataset_image_text",
    ]
    assert info["images"].evaluators == ["fid", "geneval", "multiple_choice", "pope", "shapes_geneval", "shapes_understanding", "vqa"]
    assert info["images"].rewards == ["clip_score", "shapes_checker", "understanding_self_reward"]
    image_plugins.add_commands(argparse.ArgumentParser().add_subparsers())
    assert {i.name: i for i in image_plugins.describe()}["images"].commands == ["ablate", "convert", "export", "quickstart"]


def test_unregister_removes_contributions(toy_plugins):
    toy_plugins.unregister("toy")
    assert "toy_vector" not in toy_plugins.modalities()


def test_unknown_modality_lists_installed(toy_plugins):
    with pytest.raises(PluginError, match=r"unknown modality 'nope'.*toy_codes"):
        toy_plugins.modality("nope")


def test_misspelled_hook_is_rejected(plugins):
    class Misspelled:
        @hookimpl
        def modal_core_modalites(self):  # typo: pluggy's check_pending catches it
            return []

    with pytest.raises(Exception, match="modal_core_modalites"):
        plugins.register(Misspelled(), name="typo")


def _fake_entry_points(monkeypatch, modules: dict[str, str]):
    """Expose `modules` (entry-point name -> module path) as the modal_core group."""
    points = [importlib.metadata.EntryPoint(name, value, "modal_core") for name, value in modules.items()]
    monkeypatch.setattr(plugin_module.importlib.metadata, "entry_points", lambda group: points if group == "modal_core" else [])


def test_entry_point_plugins_load(monkeypatch):
    _fake_entry_points(monkeypatch, {"toy": "toy_plugin"})
    manager = PluginManager()
    assert "toy_vector" in manager.modalities()
    assert not manager.failures


def test_plugin_filter_env_restricts_loading(monkeypatch):
    _fake_entry_points(monkeypatch, {"toy": "toy_plugin"})
    monkeypatch.setenv("MODAL_CORE_PLUGINS", "")
    assert "toy_vector" not in PluginManager().modalities()


def test_import_error_is_reported_and_others_survive(monkeypatch):
    _fake_entry_points(monkeypatch, {"broken": "no_such_module_anywhere", "toy": "toy_plugin"})
    with pytest.warns(UserWarning, match="broken"):
        manager = PluginManager()
    assert "toy_vector" in manager.modalities()
    [failure] = manager.failures
    assert failure.plugin == "broken"
    assert "No module named 'no_such_module_anywhere'" in failure.reason
    assert "distribution" in str(failure)


def _module_with(name: str, modalities) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def modal_core_modalities():
        return modalities

    module.modal_core_modalities = modal_core_modalities
    return module


def test_duplicate_modality_name_is_reported(toy_plugins):
    from toy_plugin import TOY_VECTOR

    toy_plugins.register(_module_with("dup", [TOY_VECTOR]), name="dup")
    with pytest.warns(UserWarning, match="already provided by plugin 'toy'"):
        specs = toy_plugins.modalities()
    assert specs["toy_vector"] is TOY_VECTOR
    assert toy_plugins.failures[0].plugin == "dup"


@pytest.mark.parametrize("bad", [None, ["not a spec"], {"a": 1}])
def test_wrong_return_type_is_reported(toy_plugins, bad):
    toy_plugins.register(_module_with("bad", bad), name="bad")
    with pytest.warns(UserWarning, match="must return a list of ModalitySpec"):
        specs = toy_plugins.modalities()
    assert "toy_codes" in specs  # the good plugin is unaffected
    assert [f.plugin for f in toy_plugins.failures] == ["bad"]


def test_hook_exception_is_reported(plugins):
    module = types.ModuleType("explodes")

    @hookimpl
    def modal_core_datasets():
        raise RuntimeError("boom")

    module.modal_core_datasets = modal_core_datasets
    plugins.register(module, name="explodes")
    with pytest.warns(UserWarning, match="boom"):
        datasets = plugins.datasets()
    assert "shapes_text" in datasets


def test_output_modality_needs_a_head():
    with pytest.raises(ValueError, match="needs build_head"):
        ModalitySpec("x", "output", object, lambda o: None, lambda o, h: None, lambda o: None, lambda o: 1)


def test_plugins_command_lists_installed_plugins():
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    assert "modal_core.builtins" in result.stdout
    assert "datasets: conversations, jsonl_text, prepared, shapes_text, webdataset_text" in result.stdout
    assert (
        "datasets: hires_shapes, image_conversations, image_folder, image_text_jsonl, shapes, shapes_prompts, "
        "vqa_jsonl, webdataset_image_text" in result.stdout
    )
    assert "rewards: clip_score, shapes_checker, understanding_self_reward" in result.stdout
    for name in ("images", "image_understanding", "vq_generation"):
        assert name in result.stdout
