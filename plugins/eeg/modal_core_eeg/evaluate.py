"""Held-out evaluation on the simulated EEG world, and a picture of example answers.

Registered as the `eeg_sim` evaluator (`modal_core_evaluators`):
`modal-core eval CHECKPOINT --suite eeg_sim --out DIR`. Recordings come from the
`test` split, which neither training (`train`) nor validation (`heldout`) draws from.
Each is asked "what activity does this eeg show?" twice: with all 19 channels, and
with a fixed 10-channel subset (the same recordings, fewer electrodes), which measures
how well the channel-aware encoder copes with a channel set it was not trained on.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from modal_core.reporting import write_json
from modal_core_eeg.simulate import ACTIVITY_QUESTION, CLASS_NAMES, draw_item, recording_for

SUBSET_CHANNELS = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2")
"""A common reduced 10-20 set: no midline and no temporal electrodes."""
PLOTTED_CHANNELS = ("Fz", "C3", "C4", "T7", "T8", "O1")
PICTURE = "eeg_examples.png"
METRICS = "eeg_metrics.json"


def _answers(pipeline: Any, modality: str, recordings: list[Any], batch_size: int) -> list[str]:
    answers: list[str] = []
    for start in range(0, len(recordings), batch_size):
        chunk = recordings[start : start + batch_size]
        answers += pipeline.answer([ACTIVITY_QUESTION] * len(chunk), media={modality: chunk})
    return [answer.strip().rstrip(".") for answer in answers]


def evaluate_simulated(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Accuracy of the activity answers on held-out simulated recordings. Options:
    `limit` (recordings, default 300), `seed` (default 0), `batch_size` (default 50),
    `seconds` (recording length, as in training; default 2.0). Writes `eeg_metrics.json`
    and `eeg_examples.png` (example traces with the model's answers) to `out_dir`."""
    count = int(options.get("limit") or 300)
    seed = int(options.get("seed") or 0)
    batch_size = int(options.get("batch_size") or 50)
    seconds = float(options.get("seconds") or 2.0)
    modality = pipeline.modality("input", keyword="eeg")
    items = [draw_item(seed, "test", index, question="activity") for index in range(count)]
    recordings = [recording_for(seed, "test", index, item, seconds) for index, item in enumerate(items)]
    truths = [item.answer for item in items]
    answers = _answers(pipeline, modality, recordings, batch_size)
    subset = [raw.copy().pick(list(SUBSET_CHANNELS)) for raw in recordings]
    subset_answers = _answers(pipeline, modality, subset, batch_size)
    per_class = {name: sum(a == t for a, t in zip(answers, truths) if t == name) / max(1, truths.count(name)) for name in CLASS_NAMES}
    metrics = {
        "accuracy": sum(a == t for a, t in zip(answers, truths)) / count,
        "accuracy_10_channels": sum(a == t for a, t in zip(subset_answers, truths)) / count,
        "per_class_accuracy": per_class,
        "chance": 1 / len(CLASS_NAMES),
        "total": count,
        "confusions": {f"{t} -> {a}": n for (t, a), n in Counter(zip(truths, answers)).most_common() if t != a},
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(metrics, out_dir / METRICS)
    plot_examples(recordings, truths, answers, out_dir / PICTURE)
    return metrics


def plot_examples(recordings: list[Any], truths: list[str], answers: list[str], path: Path) -> None:
    """One panel per class (its first recording): a few raw channels, the true class and
    the model's answer (green when right, red when wrong); written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = [truths.index(name) for name in CLASS_NAMES if name in truths]
    figure, axes = plt.subplots(len(firsts), 1, figsize=(9, 1.9 * len(firsts)), squeeze=False)
    for axis, index in zip(axes[:, 0], firsts):
        raw = recordings[index]
        data = raw.get_data(picks=list(PLOTTED_CHANNELS)) * 1e6  # microvolts
        for row, (name, trace) in enumerate(zip(PLOTTED_CHANNELS, data)):
            axis.plot(raw.times, trace - trace.mean() - 120 * row, linewidth=0.6, color="black")
            axis.text(-0.02, -120 * row, name, transform=axis.get_yaxis_transform(), ha="right", va="center", fontsize=7)
        correct = answers[index] == truths[index]
        axis.set_title(f"truth: {truths[index]}   model: {answers[index]!r}", fontsize=9, color="green" if correct else "red")
        axis.set_yticks([])
        axis.set_xlim(raw.times[0], raw.times[-1])
    axes[-1, 0].set_xlabel("seconds (raw traces, 120 uV between channels)")
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)
    os.replace(temporary, path)
