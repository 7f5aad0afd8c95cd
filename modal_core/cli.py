"""The `modal-core` command line. Plugins add sub-commands through `modal_core_commands`."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from modal_core import __version__
from modal_core.errors import ModalCoreError
from modal_core.plugins import PluginManager, get_plugin_manager

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def _train(args: argparse.Namespace, plugins: PluginManager) -> int:
    from modal_core.config.loader import load_recipe
    from modal_core.training.run import train

    recipe = load_recipe(args.recipe, args.overrides, plugins)
    result = train(recipe, plugins)
    print(f"done: checkpoint {result.checkpoint}")
    return 0


def _recipes(args: argparse.Namespace, plugins: PluginManager) -> int:
    import yaml

    root = Path(args.dir)
    files = sorted(root.rglob("*.yaml"))
    if not files:
        print(f"no recipes under {root}")
        return 1
    width = max(len(str(f.relative_to(root))) for f in files)
    for file in files:
        description = (yaml.safe_load(file.read_text()) or {}).get("description", "")
        print(f"{str(file.relative_to(root)):<{width}}  {description}")
    return 0


def _plugins(args: argparse.Namespace, plugins: PluginManager) -> int:
    for info in plugins.describe():
        print(f"{info.name}  ({info.distribution} {info.version})")
        for kind in ("modalities", "datasets", "evaluators", "commands"):
            items = getattr(info, kind)
            if items:
                print(f"    {kind}: {', '.join(items)}")
    for failure in plugins.failures:
        print(f"BROKEN {failure}")
    return 1 if plugins.failures else 0


def build_parser(plugins: PluginManager) -> argparse.ArgumentParser:
    """The full parser: built-in commands plus every plugin's."""
    parser = argparse.ArgumentParser(prog="modal-core", description="Train and run unified multimodal models.")
    parser.add_argument("--version", action="version", version=f"modal-core {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train from a recipe: modal-core train RECIPE.yaml key=value ...")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("overrides", nargs="*", help="key=value overrides (e.g. trainer.max_steps=10)")
    train.set_defaults(handler=_train)

    recipes = commands.add_parser("recipes", help="list the shipped recipes")
    recipes.add_argument("--dir", default=str(RECIPES_DIR), help="recipe folder (default: the shipped recipes)")
    recipes.set_defaults(handler=_recipes)

    listing = commands.add_parser("plugins", help="list installed plugins and what they contribute")
    listing.set_defaults(handler=_plugins)

    plugins.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None, plugins: PluginManager | None = None) -> int:
    """Run the CLI; user errors print one clear line (a traceback with --debug)."""
    plugins = plugins or get_plugin_manager()
    parser = build_parser(plugins)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        code = args.handler(args, plugins) if _takes_plugins(args.handler) else args.handler(args)
    except ModalCoreError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 1
    return int(code or 0)


def _takes_plugins(handler) -> bool:
    return handler.__code__.co_argcount >= 2
