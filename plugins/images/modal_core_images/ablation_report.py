"""The table of the encoder ablation: per arm, understanding accuracy, generation accuracy,
two-object accuracy and wall time, as Markdown and as a PNG bar chart; with several seeds
each cell is the mean ± sample sd over seeds. A metric an arm does not have (an
understanding-only arm draws nothing) is a dash, and no bar."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from modal_core.reporting import save_figure, write_text

METRICS = (
    ("understanding_accuracy", "understanding accuracy"),
    ("generation_accuracy", "generation accuracy"),
    ("two_object_accuracy", "two-object accuracy"),
)
SECONDS = ("seconds", "wall time (s)")


@dataclass(frozen=True)
class ArmResult:
    """One seed's numbers of one arm; None where the arm lacks the task."""

    arm: str
    seed: int
    understanding_accuracy: float | None
    generation_accuracy: float | None
    two_object_accuracy: float | None
    seconds: float


@dataclass(frozen=True)
class TokenizerQuality:
    """A trained modality tokenizer's reconstruction PSNR (dB) and codebook usage (fraction of codes used)."""

    psnr_db: float
    codebook_usage: float


def summarise(results: list[ArmResult]) -> dict[str, dict[str, tuple[float, float | None] | None]]:
    """Per arm (in first-seen order), per metric: (mean, sd over seeds; None for one seed),
    or None where the arm lacks the metric."""
    arms: dict[str, list[ArmResult]] = {}
    for result in results:
        arms.setdefault(result.arm, []).append(result)
    summary = {}
    for arm, seeds in arms.items():
        summary[arm] = {}
        for key, _ in (*METRICS, SECONDS):
            values = [getattr(seed, key) for seed in seeds]
            if any(value is None for value in values):
                summary[arm][key] = None
                continue
            summary[arm][key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
    return summary


def _cell(value: tuple[float, float | None] | None, digits: int) -> str:
    if value is None:
        return "—"
    mean, sd = value
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_table(results: list[ArmResult], tokenizers: dict[str, TokenizerQuality] | None = None) -> str:
    """The table as Markdown: one row per arm, accuracies to 3 places, seconds to 0; then,
    if given, the tokenizers' PSNR and codebook usage."""
    seeds = sorted({result.seed for result in results})
    header = ["arm", *(title for _, title in METRICS), SECONDS[1]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, metrics in summarise(results).items():
        cells = [_cell(metrics[key], 3) for key, _ in METRICS] + [_cell(metrics[SECONDS[0]], 0)]
        lines.append("| " + " | ".join([arm, *cells]) + " |")
    spread = " (mean ± sd)" if len(seeds) > 1 else ""
    text = "\n".join(lines) + f"\n\nSeeds: {', '.join(map(str, seeds))}{spread}.\n"
    if tokenizers:
        rows = [f"| {name} | {quality.psnr_db:.2f} | {quality.codebook_usage:.3f} |" for name, quality in sorted(tokenizers.items())]
        text += "\n| tokenizer run | PSNR (dB) | codebook usage |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    return text


def write_table(results: list[ArmResult], markdown: Path, png: Path, tokenizers: dict[str, TokenizerQuality] | None = None) -> None:
    """Write the Markdown table (`markdown_table`) to `markdown` and the accuracies as
    grouped bars (error bars: sd over seeds) to `png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("no arm results to tabulate")
    write_text(markdown_table(results, tokenizers), markdown)
    summary = summarise(results)
    figure, axis = plt.subplots(figsize=(1.8 * len(summary) + 2, 3.6))
    width = 0.8 / len(METRICS)
    for index, (key, title) in enumerate(METRICS):
        bars = [(position, metrics[key]) for position, metrics in enumerate(summary.values()) if metrics[key] is not None]
        if bars:
            positions = [position + (index - 1) * width for position, _ in bars]
            means = [value[0] for _, value in bars]
            errors = [value[1] or 0.0 for _, value in bars]
            axis.bar(positions, means, width, yerr=errors, capsize=3, label=title)
    axis.set_xticks(range(len(summary)), list(summary), fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)
    save_figure(figure, png)
