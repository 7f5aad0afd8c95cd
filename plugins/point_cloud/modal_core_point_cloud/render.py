"""Pictures of point clouds: grids of 3-D scatter plots with a caption each, as PNG.

Uses matplotlib's object API (no pyplot, no display), so it runs headless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modal_core_point_cloud.io import PointSet
from modal_core_point_cloud.processing import normalise

PANEL_INCHES = 2.6
MAX_DRAWN_POINTS = 1024


def save_point_cloud_grid(point_sets: Sequence[PointSet], captions: Sequence[str], path: str | Path, columns: int = 4) -> Path:
    """Draw each cloud (normalised to the unit sphere, coloured by its colours or by
    height) in a grid with its caption underneath; write a PNG to `path`."""
    from matplotlib.figure import Figure

    if len(point_sets) != len(captions) or not point_sets:
        raise ValueError(f"need one caption per cloud and at least one cloud, got {len(point_sets)} clouds, {len(captions)} captions")
    columns = min(columns, len(point_sets))
    rows = -(-len(point_sets) // columns)
    figure = Figure(figsize=(PANEL_INCHES * columns, (PANEL_INCHES + 0.5) * rows))
    for index, (point_set, caption) in enumerate(zip(point_sets, captions)):
        axes = figure.add_subplot(rows, columns, index + 1, projection="3d")
        step = max(1, len(point_set) // MAX_DRAWN_POINTS)
        points = normalise(point_set.points.astype(np.float64))[::step]
        style = {"c": point_set.colours[::step]} if point_set.colours is not None else {"c": points[:, 2], "cmap": "viridis"}
        axes.scatter(points[:, 0], points[:, 1], points[:, 2], s=3, depthshade=False, **style)
        axes.set(xlim=(-0.8, 0.8), ylim=(-0.8, 0.8), zlim=(-0.8, 0.8))
        axes.set_box_aspect((1, 1, 1))
        axes.view_init(elev=25, azim=-60)
        axes.set_axis_off()
        axes.set_title(caption, fontsize=7, y=-0.08)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path
