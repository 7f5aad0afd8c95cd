"""The `time_series_waves` evaluation suite: exact answers on held-out waves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modal_core_time_series.modality import NAME
from modal_core_time_series.waves import QUESTIONS, Waves


def evaluate_waves(pipeline: Any, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Ask a loaded model (`modal_core.Pipeline`) about `limit` held-out series and score
    exact answers, overall and per question; every answer goes to `answers.jsonl`.

    Options: `limit` (default 64), `seed` (0), `batch_size` (16), and `length` /
    `channels` when the model's series differ from the defaults (64, 3)."""
    # `modal-core eval` passes every option it knows, None where the user gave none.
    setting = {"limit": 64, "seed": 0, "batch_size": 16, "length": 64, "channels": 3}
    setting.update({key: int(value) for key, value in options.items() if key in setting and value is not None})
    limit, batch_size = setting["limit"], setting["batch_size"]
    data = Waves(limit, setting["seed"], "heldout", setting["length"], setting["channels"])
    items = [data.item(index) for index in range(limit)]
    answers: list[str] = []
    for start in range(0, limit, batch_size):
        batch = items[start : start + batch_size]
        questions = [QUESTIONS[kind] for kind, _, _ in batch]
        answers += pipeline.answer(questions, media={NAME: [series for _, _, series in batch]}, max_new_tokens=16)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    correct = {kind: [] for kind in QUESTIONS}
    with (out_dir / "answers.jsonl").open("w", encoding="utf-8") as handle:
        for (kind, expected, _), answer in zip(items, answers):
            correct[kind].append(answer.strip().rstrip(".").lower() == expected)
            handle.write(json.dumps({"question": QUESTIONS[kind], "expected": expected, "answer": answer}) + "\n")
    metrics: dict[str, Any] = {"accuracy": sum(sum(hits) for hits in correct.values()) / limit, "count": limit}
    for kind, hits in correct.items():
        metrics[f"{kind}_accuracy"] = sum(hits) / len(hits) if hits else None
    return metrics
