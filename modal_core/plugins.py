"""The plugin manager: loads the ``modal_core`` entry-point group and collects what
plugins contribute.

One broken plugin (import error, exception in a hook, wrong return type, duplicate name)
is reported with its plugin and distribution name and skipped; the others keep working.
Set ``MODAL_CORE_PLUGINS`` to a comma-separated list of entry-point names to load only
those (an empty value loads none).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pluggy

from modal_core import __version__, hookspecs
from modal_core.errors import PluginError
from modal_core.modality import ModalitySpec

ENTRY_POINT_GROUP = "modal_core"
PLUGIN_FILTER_ENV = "MODAL_CORE_PLUGINS"
BUILTIN_PLUGINS = ("modal_core.builtins",)
"""Modules registered first, by module name, in every manager: the core's own
contributions are a plugin like any other (pytest loads its default plugins this way)."""


@dataclass(frozen=True)
class PluginFailure:
    """A plugin (or one of its hooks) that could not be used, and why."""

    plugin: str
    distribution: str
    reason: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} (distribution {self.distribution}): {self.reason}"


@dataclass
class PluginInfo:
    """What `modal-core plugins` shows for one plugin."""

    name: str
    distribution: str
    version: str
    modalities: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    evaluators: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    block_classes: list[str] = field(default_factory=list)
    """The repeated blocks it declares (FSDP units, activation-checkpointing boundaries)."""
    rewards: list[str] = field(default_factory=list)


class PluginManager:
    """Wraps a pluggy manager with the modal-core hook specs and the registries built
    from them (modalities, data sets, evaluators, rewards)."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self._pm = pluggy.PluginManager("modal_core")
        self._pm.add_hookspecs(hookspecs)
        self._distributions: dict[str, tuple[str, str]] = {}
        self.failures: list[PluginFailure] = []
        self._registries: dict[str, dict[str, Any]] = {}
        self._commands: dict[str, list[str]] = {}
        self._register_builtins()
        if load_entry_points:
            self._load_entry_points()

    # -- registration -------------------------------------------------------------
    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object in-process (tests, notebooks); returns its name."""
        registered = self._pm.register(plugin, name=name)
        if registered is None:
            raise PluginError(f"plugin {name or plugin!r} is already registered")
        self._pm.check_pending()
        self._registries.clear()
        return registered

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under `name`."""
        self._pm.unregister(name=name)
        self._registries.clear()

    def _register_builtins(self) -> None:
        for module_name in BUILTIN_PLUGINS:
            self._pm.register(importlib.import_module(module_name), name=module_name)
            self._distributions[module_name] = ("modal-core", __version__)

    def _load_entry_points(self) -> None:
        wanted = os.environ.get(PLUGIN_FILTER_ENV)
        allowed = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and entry_point.name not in allowed:
                continue
            dist = entry_point.dist
            dist_name, version = (dist.metadata["Name"], dist.version) if dist else ("<unknown>", "?")
            try:
                module = entry_point.load()
                self._pm.register(module, name=entry_point.name)
                self._pm.check_pending()
            except Exception as error:  # a broken plugin must not take the others down
                self._fail(entry_point.name, f"failed to load ({type(error).__name__}: {error})", dist_name)
                if self._pm.has_plugin(entry_point.name):
                    self._pm.unregister(name=entry_point.name)
                continue
            self._distributions[entry_point.name] = (dist_name, version)

    def _fail(self, plugin: str, reason: str, distribution: str | None = None) -> None:
        failure = PluginFailure(plugin, distribution or self.distribution_of(plugin)[0], reason)
        self.failures.append(failure)
        warnings.warn(f"modal-core: skipping {failure}", stacklevel=3)

    def distribution_of(self, plugin: str) -> tuple[str, str]:
        """(distribution name, version) of a plugin; in-process plugins have none."""
        return self._distributions.get(plugin, ("<registered in-process>", "-"))

    # -- registries ---------------------------------------------------------------
    def _collect(self, hook: str, check: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Call `hook` on every plugin separately, validate each result with `check`
        (which returns name -> item), and merge, rejecting duplicate names."""
        if hook in self._registries:
            return self._registries[hook]
        merged: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for impl in getattr(self._pm.hook, hook).get_hookimpls():  # registration order: first wins
            try:
                items = check(impl.function())
            except Exception as error:
                self._fail(impl.plugin_name, f"hook {hook} failed ({type(error).__name__}: {error})")
                continue
            for name, item in items.items():
                if name in merged:
                    self._fail(impl.plugin_name, f"{hook}: name {name!r} is already provided by plugin {owners[name]!r}")
                    continue
                merged[name], owners[name] = item, impl.plugin_name
        self._registries[hook] = merged
        self._registries[hook + ":owners"] = owners
        return merged

    def modalities(self) -> dict[str, ModalitySpec]:
        """All installed modalities by name."""
        return self._collect("modal_core_modalities", _check_modalities)

    def datasets(self) -> dict[str, Callable[..., Any]]:
        """All installed data set factories by name."""
        return self._collect("modal_core_datasets", _check_named_callables("modal_core_datasets"))

    def evaluators(self) -> dict[str, Callable[..., Any]]:
        """All installed evaluators by suite name."""
        return self._collect("modal_core_evaluators", _check_named_callables("modal_core_evaluators"))

    def rewards(self) -> dict[str, Callable[..., Any]]:
        """All installed reward factories by name (see the `modal_core_rewards` hook)."""
        return self._collect("modal_core_rewards", _check_named_callables("modal_core_rewards"))

    def block_classes(self) -> tuple[type, ...]:
        """Module classes the plugins declare as repeated blocks (FSDP units and
        activation-checkpointing boundaries); a plugin returning anything else is skipped."""
        classes: dict[type, None] = {}
        for declared in self._block_classes_by_plugin().values():
            classes.update(dict.fromkeys(declared))
        return tuple(classes)

    def _block_classes_by_plugin(self) -> dict[str, list[type]]:
        from torch import nn

        declared: dict[str, list[type]] = {}
        for impl in self._pm.hook.modal_core_block_classes.get_hookimpls():
            try:
                result = impl.function()
                if not isinstance(result, (list, tuple)) or not all(isinstance(c, type) and issubclass(c, nn.Module) for c in result):
                    raise TypeError(f"must return a list of torch.nn.Module classes, got {result!r:.200}")
            except Exception as error:
                self._fail(impl.plugin_name, f"hook modal_core_block_classes failed ({type(error).__name__}: {error})")
                continue
            declared.setdefault(impl.plugin_name, []).extend(result)
        return declared

    def modality(self, name: str) -> ModalitySpec:
        """One modality by name, with an error listing the installed ones."""
        specs = self.modalities()
        if name not in specs:
            raise PluginError(f"unknown modality {name!r}; installed: {sorted(specs) or 'none'} (see `modal-core plugins`)")
        return specs[name]

    def add_commands(self, subparsers: Any) -> None:
        """Let every plugin add its sub-commands; a failing plugin is skipped."""
        for impl in self._pm.hook.modal_core_commands.get_hookimpls():
            before = set(subparsers.choices)
            try:
                impl.function(**{arg: subparsers for arg in impl.argnames})
                self._commands[impl.plugin_name] = sorted(set(subparsers.choices) - before)
            except Exception as error:
                self._fail(impl.plugin_name, f"hook modal_core_commands failed ({type(error).__name__}: {error})")

    def describe(self) -> list[PluginInfo]:
        """Every registered plugin with its distribution, version and contributions."""
        registries = {
            "modalities": ("modal_core_modalities", self.modalities),
            "datasets": ("modal_core_datasets", self.datasets),
            "evaluators": ("modal_core_evaluators", self.evaluators),
            "rewards": ("modal_core_rewards", self.rewards),
        }
        infos = []
        blocks = self._block_classes_by_plugin()
        for name, _plugin in sorted(self._pm.list_name_plugin(), key=lambda pair: pair[0]):
            info = PluginInfo(name, *self.distribution_of(name))
            for attribute, (hook, build) in registries.items():
                build()
                owners = self._registries[hook + ":owners"]
                setattr(info, attribute, sorted(item for item, owner in owners.items() if owner == name))
            info.commands = self._commands.get(name, [])
            info.block_classes = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in blocks.get(name, []))
            infos.append(info)
        return infos


def _check_modalities(result: Any) -> dict[str, ModalitySpec]:
    if not isinstance(result, (list, tuple)) or not all(isinstance(item, ModalitySpec) for item in result):
        raise TypeError(f"modal_core_modalities must return a list of ModalitySpec, got {result!r:.200}")
    return {spec.name: spec for spec in result}


def _check_named_callables(hook: str) -> Callable[[Any], dict[str, Any]]:
    def check(result: Any) -> dict[str, Any]:
        if not isinstance(result, dict) or not all(isinstance(k, str) and callable(v) for k, v in result.items()):
            raise TypeError(f"{hook} must return a dict of name -> callable, got {result!r:.200}")
        return result

    return check


@cache
def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager with the installed entry-point plugins loaded."""
    return PluginManager()
