"""Dynamic high resolution: an image cut into a grid of encoder-sized tiles plus a
global thumbnail (InternVL / LLaVA-NeXT style), so small details of large or wide
images survive.

The grid is chosen from the allowed grids (every rows x cols with at most `max_tiles`
tiles) by InternVL's rule: the grid whose aspect ratio (cols / rows) is closest to the
image's; among equally close grids, the one with more tiles when the image has more
than half the pixels of that grid's canvas. The image is resized (stretched) to the
grid's canvas and cut row by row; the thumbnail is the whole image at the encoder's size,
processed as an untiled image would be.

Layout of one item's positions: the thumbnail's features, then a row end; then each row
of tiles, a separator between two tiles and a row end after the last. A 1 x 1 grid is the
thumbnail alone, exactly the untiled item.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
from PIL import Image

from modal_core.modality import VariableItem
from modal_core_images.processing import ImageProcessor, ImageSource

TILE_SEPARATOR = "<tile_separator>"
"""Between two tiles of a row."""
ROW_END = "<tile_row_end>"
"""After the thumbnail and after each row of tiles."""

Grid = tuple[int, int]  # (rows, cols)


def allowed_grids(max_tiles: int, min_tiles: int = 1) -> list[Grid]:
    """Every (rows, cols) with `min_tiles` <= rows * cols <= `max_tiles`, fewest tiles first
    (then fewer rows first)."""
    if min_tiles < 1 or max_tiles < min_tiles:
        raise ValueError(f"tiling needs 1 <= min_tiles <= max_tiles, got min_tiles {min_tiles}, max_tiles {max_tiles}")
    grids = [(rows, cols) for rows in range(1, max_tiles + 1) for cols in range(1, max_tiles + 1) if min_tiles <= rows * cols <= max_tiles]
    return sorted(grids, key=lambda grid: (grid[0] * grid[1], grid[0]))


def choose_grid(width: int, height: int, grids: list[Grid], tile_size: int) -> Grid:
    """The grid of `grids` (in `allowed_grids` order) for a `width` x `height` image (see the
    module docstring). Ratios are exact fractions, so ties are ties."""
    aspect = Fraction(width, height)
    best, best_difference = grids[0], abs(aspect - Fraction(grids[0][1], grids[0][0]))
    for rows, cols in grids[1:]:
        difference = abs(aspect - Fraction(cols, rows))
        if difference < best_difference:
            best, best_difference = (rows, cols), difference
        elif difference == best_difference and 2 * width * height > tile_size * tile_size * rows * cols:
            best = (rows, cols)
    return best


def tile_layout(grid: Grid, per_tile: int) -> tuple[int | str, ...]:
    """The positions of an item tiled on `grid` whose tiles have `per_tile` features each
    (see the module docstring)."""
    rows, cols = grid
    if rows * cols == 1:
        return (per_tile,)
    row = (per_tile, TILE_SEPARATOR) * (cols - 1) + (per_tile, ROW_END)
    return (per_tile, ROW_END) + row * rows


def cut_tiles(image: Image.Image, grid: Grid, tile_size: int) -> list[Image.Image]:
    """`image` stretched to the grid's canvas and cut into tiles, row by row."""
    rows, cols = grid
    canvas = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    boxes = [(c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size) for r in range(rows) for c in range(cols)]
    return [canvas.crop(box) for box in boxes]


@dataclass(frozen=True)
class TiledImageProcessor:
    """Turns one image into a `VariableItem`: the thumbnail and the tiles of its grid,
    (1 + rows * cols, 3, size, size) (a 1 x 1 grid: the thumbnail alone), with its layout."""

    base: ImageProcessor
    """Loads images and makes the thumbnail; its `size` is the tile size."""
    grids: tuple[Grid, ...]
    """Allowed grids, in `allowed_grids` order."""
    per_tile: int
    """Features the encoder gives one tile."""

    def __call__(self, source: ImageSource) -> VariableItem:
        image = self.base.load(source)
        grid = choose_grid(image.width, image.height, list(self.grids), self.base.size)
        pixels = [self.base.to_tensor(image)]
        if grid != (1, 1):
            pixels += [self.base.to_tensor(tile, pad_square=False) for tile in cut_tiles(image, grid, self.base.size)]
        return VariableItem(torch.stack(pixels), tile_layout(grid, self.per_tile), describe_grid(grid))

    def describe(self) -> str:
        """One line saying how an image becomes tiles (for protocol cards)."""
        largest = max(rows * cols for rows, cols in self.grids)
        side = self.base.size
        grids = f"up to {largest} tiles of {side}x{side} on the grid closest to its aspect ratio"
        return f"tiled: {grids}, plus a thumbnail ({self.base.describe()})"


def describe_grid(grid: Grid) -> str:
    """How many tiles an item of `grid` uses, for people."""
    rows, cols = grid
    if rows * cols == 1:
        return "1 tile (1x1 grid: the thumbnail alone)"
    return f"{rows * cols + 1} tiles ({rows}x{cols} grid + thumbnail)"
