"""`modal-core eval`: run one registered evaluation suite on a checkpoint and write
`results.json` and `report.md` next to what the suite itself writes.

A results folder belongs to one (checkpoint, suite, settings) triple, recorded in
`run.json`: rerunning the same command resumes (suites skip the items in
`items.jsonl`), while pointing another checkpoint or other settings at it is refused.
`limit`, `batch_size` and `device` may change between runs: they do not change what an
already-scored item's result is. A suite's protocol card (see
`modal_core.evaluation.protocol`) goes to `results.json`'s ``protocol``.
"""

from __future__ import annotations

import inspect
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modal_core.errors import EvaluationError
from modal_core.evaluation.protocol import PROTOCOL_KEY
from modal_core.evaluation.report import write_report
from modal_core.plugins import PluginManager
from modal_core.reporting import write_json

RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
RESUMABLE_OPTIONS = ("limit", "batch_size", "device")
"""Options that may differ between a run and its resumption."""


@dataclass(frozen=True)
class SuiteInfo:
    """One registered suite as `modal-core eval --list` shows it."""

    name: str
    plugin: str
    description: str


def suite_description(evaluate: Callable[..., Any]) -> str:
    """One line describing an evaluator: its ``description`` attribute if it has one,
    else the first sentence of its docstring (see the `modal_core_evaluators` hook)."""
    described = getattr(evaluate, "description", None)
    if isinstance(described, str) and described.strip():
        return " ".join(described.split())
    doc = inspect.getdoc(evaluate) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    if not paragraph:
        return "(no description)"
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def list_suites(plugins: PluginManager) -> list[SuiteInfo]:
    """Every registered suite with the plugin that provides it, sorted by name."""
    evaluators = plugins.evaluators()
    owners = {suite: info.name for info in plugins.describe() for suite in info.evaluators}
    return [SuiteInfo(name, owners.get(name, "?"), suite_description(evaluators[name])) for name in sorted(evaluators)]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _claim_folder(out_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Record which run owns `out_dir`, refusing a folder that another run wrote."""
    path = out_dir / RUN_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != fingerprint:
            changed = sorted(k for k in {**previous, **fingerprint} if previous.get(k) != fingerprint.get(k))
            raise EvaluationError(
                f"{out_dir} holds results of another evaluation ({', '.join(changed)} differ: was "
                f"{ {k: previous.get(k) for k in changed} }); choose another --out or delete the folder"
            )
        return
    write_json(fingerprint, path)


def evaluate_checkpoint(
    checkpoint: str | Path,
    suite: str,
    options: dict[str, Any],
    out_dir: str | Path,
    plugins: PluginManager,
    device: str = "cpu",
) -> dict[str, Any]:
    """Load `checkpoint`, run `suite` into `out_dir` and write `results.json` and
    `report.md` there; returns the results (what `results.json` holds)."""
    from modal_core.checkpoints import store
    from modal_core.generation.pipeline import Pipeline

    evaluators = plugins.evaluators()
    if suite not in evaluators:
        raise EvaluationError(
            f"unknown evaluation suite {suite!r}; registered: {sorted(evaluators) or 'none'} (see `modal-core eval --list`)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    directory = store.resolve_checkpoint(checkpoint)
    kept = {k: v for k, v in sorted(options.items()) if k not in RESUMABLE_OPTIONS}
    _claim_folder(out_dir, {"suite": suite, "checkpoint": str(Path(directory).resolve()), "options": kept})
    pipeline = Pipeline.load(directory, plugins=plugins, device=device)
    _seed_everything(int(options.get("seed") or 0))
    started = time.perf_counter()
    metrics = evaluators[suite](pipeline, dict(options), out_dir)
    protocol = metrics.pop(PROTOCOL_KEY, None) if isinstance(metrics, dict) else None
    results = {
        "suite": suite,
        "checkpoint": str(directory),
        "options": dict(sorted(options.items())),
        "protocol": protocol,
        "metrics": metrics,
        "seconds": round(time.perf_counter() - started, 2),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        json.dumps(results)
    except TypeError as error:
        raise EvaluationError(f"suite {suite!r} returned metrics that are not JSON-serialisable ({error})") from error
    write_json(results, out_dir / RESULTS_FILE)
    write_report(results, out_dir)
    return results
