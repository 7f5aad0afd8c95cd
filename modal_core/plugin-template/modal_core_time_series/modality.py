"""The `time_series` modality: a multichannel series of `length` time steps.

Raw item (a `.csv` / `.npy` file or an array of shape (length, channels))
  -> processor: checked and standardised per channel          (length, channels)
  -> encoder: patches of `patch_length` steps, a small transformer  (P, width)
  -> adapter: two-layer GELU MLP into the backbone's width          (P, hidden)
Each of the P = length / patch_length patches takes one position in the sequence.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from modal_core.errors import DataError, RecipeError
from modal_core.modality import ModalitySpec
from torch import nn

NAME = "time_series"


@dataclass
class TimeSeriesOptions:
    """Recipe options under `modalities.time_series` (validated by modal-core)."""

    channels: int = 3
    """Columns of a series (sensors, variables)."""
    length: int = 64
    """Time steps of a series; every item must have exactly this many rows."""
    patch_length: int = 8
    """Time steps per patch; a patch is one position of the sequence."""
    width: int = 64
    """Feature size of the encoder."""
    num_layers: int = 1
    """Transformer layers of the encoder."""
    num_heads: int = 4
    """Attention heads of the encoder."""


def num_patches(options: TimeSeriesOptions) -> int:
    """Sequence positions one series occupies; rejects options that do not tile."""
    if options.length <= 0 or options.patch_length <= 0 or options.length % options.patch_length:
        raise RecipeError(
            f"modalities.{NAME}: length ({options.length}) must be a positive multiple of patch_length ({options.patch_length})"
        )
    if options.width % options.num_heads:
        raise RecipeError(f"modalities.{NAME}: width ({options.width}) must be divisible by num_heads ({options.num_heads})")
    return options.length // options.patch_length


# -- processor: one raw item -> a (length, channels) tensor ---------------------------------
def read_series(item: Any) -> np.ndarray:
    """A series from a `.csv` file (one row per time step, an optional header row), a
    `.npy` file, or anything `numpy.asarray` takes."""
    if not isinstance(item, (str, Path)):
        return np.asarray(item, dtype=np.float64)
    path = Path(item)
    if not path.is_file():
        raise DataError(f"time series file not found: {path}")
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False).astype(np.float64)
        except ValueError as error:
            raise DataError(f"{path}: not a numeric .npy array ({error})") from error
    if path.suffix != ".csv":
        raise DataError(f"{path}: unsupported time series file; expected .csv or .npy")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _is_numeric(rows[0]):
        rows = rows[1:]  # a header of column names
    for number, row in enumerate(rows, start=1):
        if not _is_numeric(row):
            raise DataError(f"{path}: data row {number} is not all numbers: {row}")
    return np.asarray([[float(value) for value in row] for row in rows], dtype=np.float64)


def _is_numeric(row: list[str]) -> bool:
    try:
        [float(value) for value in row]
    except ValueError:
        return False
    return True


def build_processor(options: TimeSeriesOptions):
    """The processor of one item: read, check the shape, standardise every channel."""

    def process(item: Any) -> torch.Tensor:
        series = read_series(item)
        where = f"time series {item}" if isinstance(item, (str, Path)) else "time series"
        if series.shape != (options.length, options.channels):
            raise DataError(f"{where}: shape {series.shape}, expected (length={options.length}, channels={options.channels})")
        if not np.isfinite(series).all():
            raise DataError(f"{where}: contains NaN or infinite values")
        # Units differ between sensors; the encoder should see shapes, not scales.
        centred = series - series.mean(axis=0)
        scale = np.maximum(series.std(axis=0), 1e-6)
        return torch.as_tensor(centred / scale, dtype=torch.float32)  # (length, channels)

    return process


# -- encoder and adapter ------------------------------------------------------------------------
class TimeSeriesEncoder(nn.Module):
    """Cuts a series into patches of `patch_length` steps, embeds each patch linearly
    and mixes the patches with a small transformer."""

    def __init__(self, options: TimeSeriesOptions) -> None:
        super().__init__()
        self.patch_length = options.patch_length
        self.embed = nn.Linear(options.patch_length * options.channels, options.width)
        self.position = nn.Parameter(torch.randn(1, num_patches(options), options.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            options.width, options.num_heads, dim_feedforward=2 * options.width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, options.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(options.width)

    def encode(self, payload: torch.Tensor) -> torch.Tensor:
        n, length, channels = payload.shape  # (n, length, channels)
        patches = payload.reshape(n, length // self.patch_length, self.patch_length * channels)  # (n, P, patch_length * channels)
        features = self.embed(patches) + self.position  # (n, P, width)
        return self.norm(self.blocks(features))  # (n, P, width)


def build_adapter(options: TimeSeriesOptions, hidden_size: int) -> nn.Module:
    """Janus-style two-layer GELU MLP from the encoder's width to the backbone's."""
    return nn.Sequential(nn.Linear(options.width, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))


TIME_SERIES = ModalitySpec(
    name=NAME,
    direction="input",
    options=TimeSeriesOptions,
    build_encoder=TimeSeriesEncoder,
    build_adapter=build_adapter,
    build_processor=build_processor,
    num_positions=num_patches,
    payload_shape=lambda options: (options.length, options.channels),
    begin_token="<begin_of_time_series>",
    end_token="<end_of_time_series>",
    placeholder_token="<time_series_placeholder>",
    cli_flag="time-series",
    description="multichannel time series (.csv / .npy) -> patch transformer + MLP adapter; text head answers",
)
