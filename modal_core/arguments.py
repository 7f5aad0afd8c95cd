"""Argument types for command lines (the built-in commands' and plugins'): each checks its
value while argparse parses, so a bad flag is one `error: argument --flag: ...` line."""

from __future__ import annotations

import argparse
from pathlib import Path

SEED_RANGE = (0, 2**63 - 1)
"""Seeds torch's generators accept."""


def seed(text: str) -> int:
    """A random seed: an integer in `SEED_RANGE`."""
    value = _integer(text)
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"{text} is out of range: a seed is an integer from 0 to 2**63 - 1")
    return value


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port: expected 0 (any free port) to 65535")
    return value


def positive_int(text: str) -> int:
    """An integer above 0."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be an integer above 0")
    return value


def positive_float(text: str) -> float:
    """A number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return value


def text(value: str) -> str:
    """Text with at least one non-space character (a prompt, a question)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def output_folder(value: str) -> Path:
    """A folder to write into: new, or an existing folder (not a file)."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a file; expected a folder to write into")
    return path


def device(value: str) -> str:
    """A torch device this machine has: cpu, cuda, cuda:N or mps."""
    import torch  # only when a device is given: listing commands stays light

    try:
        parsed = torch.device(value)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a torch device: expected cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{value}: this machine has no usable CUDA GPU (use cpu)")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{value}: MPS is not available on this machine (use cpu)")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{value}: expected cpu, cuda, cuda:N or mps")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
