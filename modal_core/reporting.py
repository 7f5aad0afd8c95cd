"""Pictures of a run: training curves as PNG, next to the numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from modal_core.checkpoints.run_folder import read_history


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
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    os.replace(temporary, path)


def write_json(data: dict, path: Path) -> None:
    """Write `data` as indented JSON, atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(temporary, path)
