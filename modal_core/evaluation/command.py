"""The `eval` command of the `modal-core` CLI."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from modal_core import arguments
from modal_core.errors import EvaluationError
from modal_core.plugins import PluginManager


def parse_option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as YAML (numbers, booleans, null stay typed)."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise EvaluationError(f"option {text!r}: expected KEY=VALUE (e.g. -o cfg=3)")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return key.strip(), value


def _eval(args: argparse.Namespace, plugins: PluginManager) -> int:
    from modal_core.evaluation.run import evaluate_checkpoint, list_suites

    if args.list:
        suites = list_suites(plugins)
        width = max((len(suite.name) for suite in suites), default=0)
        for suite in suites:
            print(f"{suite.name:<{width}}  {suite.description}  [{suite.plugin}]")
        return 0
    missing = [flag for flag, value in (("CHECKPOINT", args.checkpoint), ("--suite", args.suite), ("--out", args.out)) if not value]
    if missing:
        raise EvaluationError(f"modal-core eval needs {', '.join(missing)} (or --list to see the suites)")
    options: dict[str, Any] = {"data": args.data, "limit": args.limit, "seed": args.seed, "batch_size": args.batch_size}
    for text in args.option:
        key, value = parse_option(text)
        options[key] = value
    results = evaluate_checkpoint(args.checkpoint, args.suite, options, Path(args.out), plugins, device=args.device)
    for name, value in results["metrics"].items():
        if not isinstance(value, dict):
            print(f"{name}: {value}")
    print(f"done: {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.md'}")
    return 0


def add_eval_command(commands: Any) -> None:
    """Add `modal-core eval` to the CLI's sub-commands."""
    parser = commands.add_parser("eval", help="score a checkpoint on a benchmark suite (see --list)")
    parser.add_argument("checkpoint", nargs="?", help="checkpoint directory (or a run directory: its last checkpoint)")
    parser.add_argument("--list", action="store_true", help="list the registered suites and exit")
    parser.add_argument("--suite", help="suite name (see --list)")
    parser.add_argument("--data", help="benchmark data: a file, or a folder holding the suite's default file")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N items")
    parser.add_argument("--seed", type=arguments.seed, default=0, help="random seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=None, help="items per model call (default: the suite's)")
    parser.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="a suite option, e.g. -o cfg=3; repeatable"
    )
    parser.add_argument("--out", help="results folder; rerunning into it resumes")
    parser.add_argument("--device", type=arguments.device, default="cpu", help="torch device (default cpu)")
    parser.set_defaults(handler=_eval)
