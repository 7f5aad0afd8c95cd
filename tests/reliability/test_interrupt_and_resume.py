"""A training process killed by SIGTERM saves a checkpoint and resumes to exactly the
weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import torch
from conftest import REPO, run_cli, tiny_text_recipe, wait_for_step, write_recipe

from modal_core.checkpoints import store

STEPS = 400


def test_sigterm_saves_and_resume_matches_uninterrupted_run(tmp_path):
    run_dir = tmp_path / "interrupted"
    recipe = tiny_text_recipe(run_dir, trainer={"max_steps": STEPS, "log_every_n_steps": 1})
    path = write_recipe(tmp_path / "r.yaml", recipe)
    process = subprocess.Popen(
        [sys.executable, "-m", "modal_core", "train", str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_for_step(run_dir / "history.jsonl", 20, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "stopped by a signal: saved" in stdout
    saved = store.resolve_checkpoint(run_dir)
    interrupted_at = int(saved.name.split("-")[1])
    assert 20 <= interrupted_at < STEPS

    result = run_cli("train", str(path), f"resume={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = store.load_model_state(run_dir)

    # The uninterrupted run is the same command in a fresh process, so nothing an earlier
    # test left in this process (threads, patched layers, plugins) can tell the runs apart.
    reference_dir = tmp_path / "reference"
    reference = run_cli("train", str(write_recipe(tmp_path / "ref.yaml", tiny_text_recipe(reference_dir, trainer=recipe["trainer"]))))
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = store.load_model_state(reference_dir)
    assert store.resolve_checkpoint(run_dir).name == store.resolve_checkpoint(reference_dir).name == f"step-{STEPS:06d}"
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-6, msg=key)
