"""Multi-node training on loopback: the shipped text quickstart recipe on 2 nodes x 1
process (started by `examples/multi-node/torchrun.sh` twice, and by
`examples/multi-node/slurm.sbatch` under a stand-in for srun) against 1 node x 2
processes (Lightning's own launcher), compared in losses and final weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_quickstart_text_overrides

from modal_core.checkpoints import store
from modal_core.checkpoints.run_folder import read_history

EXAMPLES = REPO / "examples" / "multi-node"
STEPS = 4
OVERRIDES = [*tiny_quickstart_text_overrides(), f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=1", "trainer.strategy=ddp"]

# What srun does on a 2-node allocation: start SLURM_NTASKS copies of the command, each
# with its task's rank variables (here all on this machine).
FAKE_SRUN = """#!/usr/bin/env bash
pids=()
for ((task = 0; task < SLURM_NTASKS; task++)); do
  SLURM_PROCID=$task SLURM_LOCALID=$((task % SLURM_NTASKS_PER_NODE)) SLURM_NODEID=$((task / SLURM_NTASKS_PER_NODE)) "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**inherited, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "PYTHONPATH": pythonpath, **extra}


def _check(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_history(run_dir / "history.jsonl") if "train/loss" in r}


@pytest.fixture(scope="module")
def one_node_two_processes(tmp_path_factory) -> Path:
    """The reference run: Lightning starts the second process on this node itself."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    command = [sys.executable, "-m", "modal_core", "train", "quickstart/text", *OVERRIDES, "trainer.devices=2", f"output_dir={run_dir}"]
    _check(subprocess.run(command, cwd=run_dir.parent, env=_env(), capture_output=True, text=True, timeout=300))
    return run_dir


def _assert_same_training(run_dir: Path, reference: Path) -> None:
    losses, expected = _losses(run_dir), _losses(reference)
    assert sorted(losses) == sorted(expected) == list(range(1, STEPS + 1))
    assert expected[STEPS] < expected[1]  # it trained
    # The same two ranks' batches and one all-reduce of two gradients: the same numbers,
    # up to the order gloo sums in over a network instead of shared memory.
    for step in expected:
        assert losses[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-6), (step, losses, expected)
    weights, expected_weights = store.load_model_state(run_dir), store.load_model_state(reference)
    assert weights.keys() == expected_weights.keys() and len(weights) > 0
    for key in expected_weights:
        torch.testing.assert_close(weights[key], expected_weights[key], rtol=0, atol=1e-6, msg=key)


def test_two_torchrun_nodes_on_loopback_match_one_node_with_two_processes(tmp_path, one_node_two_processes):
    run_dir = tmp_path / "run"
    port = str(_free_port())
    nodes = [
        subprocess.Popen(
            ["bash", str(EXAMPLES / "torchrun.sh"), "quickstart/text", *OVERRIDES, f"output_dir={run_dir}"],
            cwd=tmp_path,
            env=_env(NNODES="2", NODE_RANK=str(rank), NPROC_PER_NODE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        stdout, stderr = node.communicate(timeout=300)
        _check(subprocess.CompletedProcess(node.args, node.returncode, stdout, stderr))
    _assert_same_training(run_dir, one_node_two_processes)


def test_the_sbatch_script_trains_two_nodes_of_one_task(tmp_path, one_node_two_processes):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "srun").chmod(0o755)
    run_dir = tmp_path / "run"
    # The variables sbatch gives the batch script of `--nodes=2 --ntasks-per-node=1`.
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "modal-core", "SLURM_NNODES": "2", "SLURM_NTASKS": "2"}
    job |= {"SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    env = _env(**job)
    env["PATH"] = os.pathsep.join([str(bin_dir), env["PATH"]])
    command = ["bash", str(EXAMPLES / "slurm.sbatch"), "quickstart/text", *OVERRIDES, f"output_dir={run_dir}"]
    _check(subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300))
    _assert_same_training(run_dir, one_node_two_processes)
