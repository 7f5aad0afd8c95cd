"""Scoring a GenEval image folder with GenEval's own scripts, when a local checkout and
the detector weights are given (djghosh13/geneval: `evaluation/evaluate_images.py` runs
Mask2Former and CLIP on every sample, `evaluation/summary_scores.py` summarises).

GenEval pins old versions of mmdet, mmcv and torch, so it usually lives in its own
environment: `geneval_python` names that interpreter (default: this one). Nothing is
downloaded here; GenEval's `evaluation/download_models.sh` fetches the detector, and
its CLIP model (open_clip ViT-L-14, "openai") must already be in open_clip's cache.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modal_core.data.jsonl import read_jsonl
from modal_core.errors import EvaluationError
from modal_core_images.evaluation import geneval

DETECTOR = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"
"""GenEval's default object detector: its weights file is `<DETECTOR>.pth`."""
REFERENCE = "djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f evaluation/evaluate_images.py, evaluation/summary_scores.py"
RESULTS_FILE = "geneval_results.jsonl"
SUMMARY_FILE = "geneval_summary.txt"
_SCRIPTS = ("evaluation/evaluate_images.py", "evaluation/summary_scores.py")
_OVERALL = re.compile(r"Overall score \(avg\. over tasks\): ([0-9.]+)")
_FAILURE_TAIL = 2000


@dataclass(frozen=True)
class GenEvalSetup:
    """Where GenEval's scripts, its detector weights and its interpreter are."""

    checkout: Path
    detector_dir: Path
    detector: str
    python: str

    def command(self, script: str, *arguments: str) -> list[str]:
        return [self.python, str(self.checkout / script), *arguments]


def geneval_setup(options: dict[str, Any]) -> GenEvalSetup | None:
    """The GenEval set-up the options name, or None when they name none (`geneval_dir`,
    `detector`, `geneval_python`). Refuses a partial or wrong one, naming every missing piece."""
    checkout, detector, python = options.get("geneval_dir"), options.get("detector"), options.get("geneval_python")
    if not checkout and not detector:
        return None
    missing = []
    if not checkout:
        missing.append("geneval_dir (a local checkout of djghosh13/geneval)")
    else:
        missing += [f"{Path(str(checkout)) / script}" for script in _SCRIPTS if not (Path(str(checkout)) / script).is_file()]
    weights = Path(str(detector)) if detector else None
    if weights is None:
        missing.append(f"detector (the {DETECTOR}.pth weights, or the folder holding them)")
    elif weights.is_dir():
        weights = weights / f"{DETECTOR}.pth"
    if weights is not None and not weights.is_file():
        missing.append(f"detector weights file {weights}")
    if python and not Path(str(python)).is_file():
        missing.append(f"geneval_python interpreter {python}")
    if missing:
        raise EvaluationError(f"suite geneval: cannot run GenEval's scorer; missing: {'; '.join(missing)}")
    return GenEvalSetup(Path(str(checkout)), weights.parent, weights.name[: -len(".pth")], str(python or sys.executable))


def unavailable_reason() -> str:
    """What scoring needs when no set-up was given."""
    return (
        f"not scored: give -o geneval_dir=CHECKOUT (djghosh13/geneval) and -o detector=PATH ({DETECTOR}.pth or its folder),"
        " and -o geneval_python=PYTHON when GenEval has its own environment"
    )


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EvaluationError(
            f"suite geneval: `{' '.join(command)}` failed (exit {done.returncode}):\n{(done.stderr or done.stdout)[-_FAILURE_TAIL:]}"
        )
    return done.stdout


def score_with_geneval(setup: GenEvalSetup, image_dir: Path) -> dict[str, Any]:
    """Run GenEval's scorer and summary on `image_dir` and return its numbers: the
    summary of its per-image verdicts (`geneval.summarise`: overall = mean over tags)
    and the overall score as `summary_scores.py` printed it (5 decimals)."""
    results = image_dir / RESULTS_FILE
    options = [] if setup.detector == DETECTOR else ["--options", f"model={setup.detector}"]
    evaluate = setup.command(_SCRIPTS[0], str(image_dir), "--outfile", str(results), "--model-path", str(setup.detector_dir), *options)
    _run(evaluate, setup.checkout)
    printed = _run(setup.command(_SCRIPTS[1], str(results)), setup.checkout)
    (image_dir / SUMMARY_FILE).write_text(printed, encoding="utf-8")
    overall = _OVERALL.search(printed)
    if overall is None:
        raise EvaluationError(f"suite geneval: summary_scores.py printed no 'Overall score' line (see {image_dir / SUMMARY_FILE})")
    verdicts = read_jsonl(results, required=("tag", "prompt", "correct"))
    summary = geneval.summarise([verdicts[index] for index in range(len(verdicts))])
    return {**summary, "summary_scores_overall": float(overall.group(1)), "results_file": str(results)}
