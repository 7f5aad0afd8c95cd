"""Command-line options shared by the commands that decode (`generate`, `understand`,
`serve`); importing this module does not import torch."""

from __future__ import annotations

import argparse

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def add_compile_argument(parser: argparse.ArgumentParser) -> None:
    """`--compile MODE`: `torch.compile` the decode step."""
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default=None,
        metavar="MODE",
        help="torch.compile the decode step with this mode (default, reduce-overhead, max-autotune): the first call takes "
        "tens of seconds longer, later ones run faster (docs: generation speed)",
    )
