"""The human-readable side of an evaluation: `report.md`, a Markdown page with the
protocol card, the metrics as a table and every picture the suite wrote (top-level
PNGs of the folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modal_core.evaluation.protocol import NOT_RECORDED

REPORT_FILE = "report.md"


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, value) of every leaf of a nested metrics dict, in insertion order."""
    rows: list[tuple[str, Any]] = []
    for name, value in metrics.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            rows += flatten_metrics(value, prefix=f"{dotted}.")
        else:
            rows.append((dotted, value))
    return rows


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "n/a"
    return str(value).replace("|", "\\|").replace("\n", " ")


def protocol_card_lines(results: dict[str, Any]) -> list[str]:
    """The "Protocol card" section: the suite's card, or what the runner knows when the
    suite recorded none."""
    card = results.get("protocol") or {"suite": results["suite"], "protocol": NOT_RECORDED}
    rows = [
        ("suite", card.get("suite", results["suite"])),
        ("protocol", card.get("protocol", NOT_RECORDED)),
        ("reference", card.get("reference", NOT_RECORDED)),
        ("prompt template", f"`{card['prompt_template']!r}`" if "prompt_template" in card else NOT_RECORDED),
        ("preprocessing", card.get("preprocessing", NOT_RECORDED)),
    ]
    decoding = card.get("decoding")
    if decoding:
        rows += [(f"decoding: {name.replace('_', ' ')}", value) for name, value in decoding.items()]
    else:
        rows.append(("decoding", NOT_RECORDED))
    rows.append(("items", card.get("items", NOT_RECORDED)))
    rows += [(name.replace("_", " "), value) for name, value in card.get("notes", {}).items()]
    return ["## Protocol card", "", "| field | value |", "| --- | --- |", *[f"| {name} | {_format(value)} |" for name, value in rows], ""]


def write_report(results: dict[str, Any], out_dir: Path) -> Path:
    """Write `out_dir/report.md` for `results` (as in `results.json`) and return its path."""
    lines = [
        f"# Evaluation: {results['suite']}",
        "",
        f"- checkpoint: `{results['checkpoint']}`",
        f"- options: `{ {k: v for k, v in results['options'].items() if v is not None} }`",
        f"- finished: {results['finished']} ({results['seconds']} s)",
        "- per-item results: `items.jsonl`; all numbers: `results.json`",
        "",
        *protocol_card_lines(results),
        "## Metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {_format(value)} |" for name, value in flatten_metrics(results["metrics"])]
    pictures = sorted(path.name for path in out_dir.glob("*.png"))
    if pictures:
        lines += ["", "## Pictures", ""]
        for name in pictures:
            lines += [f"### {name}", "", f"![{name}]({name})", ""]
    path = out_dir / REPORT_FILE
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
