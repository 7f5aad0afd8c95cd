"""Command-line options shared by the commands that decode (`generate`, `understand`,
`serve`); importing this module does not import torch."""

from __future__ import annotations

import argparse

from modal_core.errors import ModelInputError
from modal_core.generation.decoding_method import DECODING_HELP, DecodingMethod

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


def _decoding(text: str) -> str:
    try:
        return str(DecodingMethod.parse(text))
    except ModelInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_decoding_argument(parser: argparse.ArgumentParser) -> None:
    """`--decoding METHOD`: how an output modality's codes are decoded (ar, sjd, zipar)."""
    parser.add_argument("--decoding", type=_decoding, default="ar", metavar="METHOD", help=DECODING_HELP)
