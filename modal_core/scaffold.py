"""`modal-core new-plugin NAME`: a new plugin package, copied from the worked example.

The scaffold is the worked example plugin (the one the docs walk through and the test
suite installs and trains), shipped as package data in `modal_core/plugin-template/`
(`examples/plugin-template/` in a source checkout links to it), with its name replaced
everywhere, so the two cannot drift apart. The template's name appears in four
spellings, each replaced by the same spelling of the new name: `time_series` (modules,
modality, data sets), `time-series` (distribution, CLI flag), `TimeSeries` (classes) and
`TIME_SERIES` (constants).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from importlib import resources
from pathlib import Path

from modal_core.errors import PluginError

# pip unpacks wheels, so the package is a plain folder and its resource root a Path.
TEMPLATE_DIR = Path(str(resources.files("modal_core") / "plugin-template"))
TEMPLATE_NAME = "time_series"
TEMPLATE_NAME_PACKAGE = "modal_core_time_series"
"""The template's Python package; a new plugin's is this with the name replaced."""
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
SKIPPED_DIRS = {"__pycache__", "build", "dist", "runs"}


def spellings(name: str) -> dict[str, str]:
    """The four spellings of a snake_case plugin name, keyed by their role."""
    words = name.split("_")
    return {
        "snake": name,
        "kebab": "-".join(words),
        "camel": "".join(word.capitalize() for word in words),
        "upper": name.upper(),
    }


def _substitute(text: str, name: str) -> str:
    old, new = spellings(TEMPLATE_NAME), spellings(name)
    for role in ("upper", "camel", "snake", "kebab"):
        text = text.replace(old[role], new[role])
    return text


def template_files(template: Path = TEMPLATE_DIR) -> list[Path]:
    """The template's files (relative paths), without build output and caches."""
    if not template.is_dir():
        raise PluginError(f"plugin template not found at {template}; reinstall modal-core (the template ships inside the package)")
    files = []
    for path in sorted(template.rglob("*")):
        relative = path.relative_to(template)
        hidden = any(part.startswith(".") for part in relative.parts)  # tool caches such as .ruff_cache
        if path.is_file() and not hidden and not any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in relative.parts):
            files.append(relative)
    return files


def new_plugin(name: str, out: str | Path | None = None, template: Path = TEMPLATE_DIR) -> Path:
    """Write a plugin package named `name` (snake_case) to `out` (default:
    `./modal-core-<name>`); returns the folder. Refuses to write into a non-empty folder."""
    if not PLUGIN_NAME.match(name):
        raise PluginError(f"plugin name {name!r}: use lower-case words joined by underscores, e.g. 'audio_clips'")
    target = Path(out) if out is not None else Path.cwd() / f"modal-core-{spellings(name)['kebab']}"
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise PluginError(f"{target} already exists and is not an empty folder; choose another --out")
    for relative in template_files(template):
        destination = target / _substitute(str(relative), name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        content = (template / relative).read_bytes()
        try:
            destination.write_text(_substitute(content.decode("utf-8"), name), encoding="utf-8")
        except UnicodeDecodeError:  # a binary file (an image in the README) is copied as is
            destination.write_bytes(content)
    return target


def _new_plugin(args: argparse.Namespace) -> int:
    package = _substitute(TEMPLATE_NAME_PACKAGE, args.name)
    if importlib.util.find_spec(package) is not None:
        print(
            f"warning: a package named {package} is already importable; installing the new plugin would shadow it "
            "(or be shadowed): choose another name unless you mean to replace it",
            file=sys.stderr,
        )
    target = new_plugin(args.name, args.out)
    kebab = spellings(args.name)["kebab"]
    print(f"wrote plugin modal-core-{kebab} to {target}")
    print(f"next: pip install -e {target} && modal-core plugins && pytest {target / 'tests'}")
    return 0


def add_new_plugin_command(commands) -> None:
    """Register `new-plugin` on the CLI's sub-parsers."""
    parser = commands.add_parser("new-plugin", help="start a new modality plugin package, copied from the worked example plugin")
    parser.add_argument("name", help="plugin and modality name in snake_case, e.g. audio_clips")
    parser.add_argument("--out", default=None, help="folder to create (default: ./modal-core-<name>)")
    parser.set_defaults(handler=_new_plugin)
