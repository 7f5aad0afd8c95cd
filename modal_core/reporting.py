"""Pictures of a run: training curves as PNG, next to the numbers, and the helpers of
offline HTML report pages (images inlined as data URIs, so one file is the whole page)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from modal_core.checkpoints.run_folder import read_history
from modal_core.disk import written_whole


def plot_curves(histories: dict[str, Path], path: Path, keys: tuple[str, ...] = ("train/loss", "val/loss")) -> None:
    """One panel per run (stage), each plotting `keys` against the step; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: read_history(file) for name, file in histories.items()}
    runs = {name: records for name, records in runs.items() if records}
    if not runs:
        raise ValueError("no metrics to plot: every history file is empty or missing")
    figure, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False)
    for axis, (name, records) in zip(axes[0], runs.items()):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if key in r]
            if points:
                axis.plot(*zip(*points), marker="o" if key.startswith("val/") else None, label=key)
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.set_yscale("log")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    save_figure(figure, path)


def save_figure(figure, path: Path) -> None:
    """Write a matplotlib figure as PNG to `path` atomically, and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    os.replace(temporary, path)


def write_json(data: dict, path: Path) -> None:
    """Write `data` as indented JSON, atomically."""
    write_text(json.dumps(data, indent=2, sort_keys=True), path)


def write_text(text: str, path: Path) -> None:
    """Write `text` (UTF-8) to `path` atomically; a full disk is one `StorageError` naming it."""
    temporary = path.with_name(f".{path.name}.tmp")
    with written_whole(path, temporary):
        temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, for an ``<img src>`` that needs no file or network."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
