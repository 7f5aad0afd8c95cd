"""A training run on shards with 2 data-loader workers, killed by SIGTERM and resumed,
trains on exactly the samples of an uninterrupted run: none twice, none skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, tiny_text_recipe, wait_for_step, write_recipe
from shard_files import text_shards

from modal_core.checkpoints import store
from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError
from modal_core.training.run import train

STEPS = 12
BATCH = 4
WORKER = Path(__file__).with_name("recording_worker.py")
ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
}


def _start(recipe: Path, out: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, str(WORKER), str(recipe), str(out), *overrides]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _finish(process: subprocess.Popen, expected: int = 0) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == expected, stdout[-2000:] + stderr[-3000:]
    return stdout


def _read(out: Path, before: int | None = None) -> list[list[int]]:
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    return [row for entry in entries if before is None or entry["step"] < before for row in entry["rows"]]


def test_a_killed_and_resumed_run_reads_exactly_the_samples_of_an_uninterrupted_run(tmp_path):
    # 6 shards of 10: an epoch is 60 samples, more than the run's 12 steps x 4.
    text_shards(tmp_path / "shards", shards=6, per_shard=10)
    source = {"dataset": "webdataset_text", "options": {"path": str(tmp_path / "shards" / "shard-{00000..00005}.tar")}}
    recipes = {}
    for name in ("interrupted", "reference"):
        recipe = tiny_text_recipe(
            tmp_path / name,
            data={"sources": [source], "batch_size": BATCH, "max_length": 48, "num_workers": 2},
            trainer={"max_steps": STEPS, "log_every_n_steps": 1, "checkpoint_every_n_steps": 0},
        )
        recipes[name] = write_recipe(tmp_path / f"{name}.yaml", recipe)

    process = _start(recipes["interrupted"], tmp_path / "killed.jsonl")
    wait_for_step(tmp_path / "interrupted" / "history.jsonl", 3, process)
    process.send_signal(signal.SIGTERM)
    assert "stopped by a signal: saved" in _finish(process, expected=143)
    saved = int(store.resolve_checkpoint(tmp_path / "interrupted").name.split("-")[1])
    assert 3 <= saved < STEPS
    _finish(_start(recipes["interrupted"], tmp_path / "resumed.jsonl", f"resume={tmp_path / 'interrupted'}"))
    _finish(_start(recipes["reference"], tmp_path / "reference.jsonl"))

    reference = _read(tmp_path / "reference.jsonl")
    assert len(reference) == STEPS * BATCH
    assert len({tuple(row) for row in reference}) == len(reference)  # every sample of the run is another one
    assert _read(tmp_path / "killed.jsonl", before=saved) + _read(tmp_path / "resumed.jsonl") == reference


def test_resuming_over_another_number_of_readers_is_refused(tmp_path, plugins):
    text_shards(tmp_path / "shards", shards=4, per_shard=4)
    source = {"dataset": "webdataset_text", "options": {"path": str(tmp_path / "shards" / "shard-{00000..00003}.tar")}}
    recipe = tiny_text_recipe(
        tmp_path / "run", data={"sources": [source], "batch_size": 2, "max_length": 48, "num_workers": 2}, trainer={"max_steps": 2}
    )
    path = write_recipe(tmp_path / "r.yaml", recipe)
    train(load_recipe(path, plugins=plugins), plugins)
    resumed = load_recipe(path, [f"resume={tmp_path / 'run'}", "trainer.max_steps=4", "data.num_workers=1"], plugins=plugins)
    with pytest.raises(RecipeError, match=r"resume: the run read its shards with 2 readers .* this run would use 1"):
        train(resumed, plugins)


def test_validation_scores_the_first_samples_of_the_held_out_stream(tmp_path, plugins):
    text_shards(tmp_path / "shards", shards=2, per_shard=4)
    source = {"dataset": "webdataset_text", "options": {"path": str(tmp_path / "shards" / "shard-{00000..00001}.tar")}}
    data = {"sources": [source], "batch_size": 2, "max_length": 48, "val_samples": 3}
    result = train(load_recipe(write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run", data=data)), plugins=plugins), plugins)
    assert any("val/loss" in record for record in read_history(result.history))
