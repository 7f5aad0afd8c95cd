"""The `plan` and `export-checkpoint` commands of the `modal-core` CLI."""

from __future__ import annotations

import argparse

from modal_core.plugins import PluginManager


def _plan(args: argparse.Namespace, plugins: PluginManager) -> int:
    from modal_core.config.loader import load_recipe
    from modal_core.scale.plan import format_plan, plan

    recipe = load_recipe(args.recipe, args.overrides, plugins)
    print(format_plan(plan(recipe, plugins), recipe))
    return 0


def _export(args: argparse.Namespace) -> int:
    from modal_core.scale.sharded import export_sharded_checkpoint

    print(f"wrote {export_sharded_checkpoint(args.checkpoint, args.output)}")
    return 0


def add_scale_commands(commands) -> None:
    """Register `plan` and `export-checkpoint` on the CLI's sub-parsers."""
    plan = commands.add_parser("plan", help="parameters, memory per GPU and tokens per step of a recipe, without allocating weights")
    plan.add_argument("recipe", help="recipe YAML file")
    plan.add_argument("overrides", nargs="*", help="key=value overrides (e.g. trainer.devices=8)")
    plan.set_defaults(handler=_plan)

    export = commands.add_parser(
        "export-checkpoint", help="consolidate a sharded FSDP checkpoint into one safetensors checkpoint directory"
    )
    export.add_argument("checkpoint", help="sharded checkpoint directory (a step-* folder)")
    export.add_argument("output", help="directory to write the consolidated checkpoint to")
    export.set_defaults(handler=_export)
