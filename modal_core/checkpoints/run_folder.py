"""The layout of a run directory, and the rule that one run never writes into another's.

```
RUN/
  recipe.yaml        the resolved recipe
  history.jsonl      logged metrics, one JSON record per logged step (`read_history`)
  bad_samples.jsonl  skipped samples, with `data.on_bad_sample: skip`
  checkpoints/       step-* checkpoints, `last` (and `best`) links
```
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from modal_core.checkpoints.store import CHECKPOINT_DIR, RECIPE_FILE
from modal_core.errors import RecipeError

HISTORY_FILE = "history.jsonl"
BAD_SAMPLES_FILE = "bad_samples.jsonl"
RUN_ENTRIES = (CHECKPOINT_DIR, HISTORY_FILE, RECIPE_FILE, BAD_SAMPLES_FILE)
"""What a run writes into its directory; any of them marks the directory as holding a run."""


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken after optimizer step `step`."""
    return f"step-{step:06d}"


def read_history(path: str | Path) -> list[dict[str, float]]:
    """The metrics log, one record per (step, kind); a resumed run's later records win."""
    records: dict[tuple[int, bool], dict[str, float]] = {}
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            record = json.loads(line)
            is_val = any(key.startswith("val/") for key in record)
            records[(record["step"], is_val)] = record
    return [records[key] for key in sorted(records)]


def is_first_process() -> bool:
    """Whether this is the first process of a (possibly distributed) run, from the
    launchers' environment (torchrun, Lightning's own launcher, SLURM); the only one
    that claims the run directory, before the others start or look."""
    return all(int(os.environ.get(name) or 0) == 0 for name in ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID"))


def claim_run_dir(run_dir: str | Path, resume: Path | None, overwrite: bool, first_process: bool = True) -> Path:
    """Make `run_dir` ready for a new run, or for continuing the run it holds.

    A directory that already holds a run is refused unless `resume` is one of its own
    checkpoints (the run continues) or `overwrite` is set (the old run's files are
    removed first; anything else in the directory is left alone). Only the first
    process of a distributed run checks and removes; the others join its directory.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RecipeError(f"output_dir: {run_dir} is a file; expected a directory (new or holding a run)")
    if not first_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    found = [name for name in RUN_ENTRIES if (run_dir / name).exists() or (run_dir / name).is_symlink()]
    continues_itself = resume is not None and resume.resolve().is_relative_to((run_dir / CHECKPOINT_DIR).resolve())
    if found and not continues_itself:
        if not overwrite:
            raise RecipeError(
                f"output_dir: {run_dir} already holds a run ({', '.join(found)}); continue it with resume={run_dir}, "
                "choose a new output_dir, or replace it with overwrite=true"
            )
        for name in found:
            _remove(run_dir / name)
        print(f"overwrite: removed the previous run's {', '.join(found)} from {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _remove(path: Path) -> None:
    """Delete a file, link or folder; a folder is first renamed aside, so no half-deleted
    checkpoints folder is ever seen under its name."""
    if path.is_dir() and not path.is_symlink():
        retired = path.with_name(f".{path.name}.removing-{os.getpid()}")
        os.replace(path, retired)
        shutil.rmtree(retired)
    else:
        path.unlink()
