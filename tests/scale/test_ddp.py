"""Real DDP training on CPU: 2 processes (gloo), launched by Lightning as `modal-core
train` launches them, against one process reading the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_text_recipe, write_recipe
from safetensors.torch import load_file

from modal_core.checkpoints import store
from modal_core.checkpoints.run_folder import read_history
from modal_core.config.loader import load_recipe
from modal_core.data.shapes_text import text_corpus
from modal_core.data.text_tokenizer import save_tokenizer, train_tokenizer
from modal_core.training.run import train

STEPS = 4
GLOBAL_BATCH = 8


def _recipe(tmp_path: Path, name: str, tokenizer_dir: Path, **trainer) -> dict:
    recipe = tiny_text_recipe(
        tmp_path / name,
        tokenizer={"path": str(tokenizer_dir)},
        optim={"lr": 1e-2, "warmup_steps": 0},
        trainer={"max_steps": STEPS, "log_every_n_steps": 1, **trainer},
    )
    # Samples of varied length, so the two ranks' halves hold different numbers of
    # supervised tokens: a per-rank mean would then differ from the global mean.
    recipe["data"] = {**recipe["data"], "batch_size": GLOBAL_BATCH // trainer.get("devices", 1), "max_length": 64}
    return recipe


def _losses(history: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_history(history) if "train/loss" in r}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(train_tokenizer(text_corpus(500, 0), 300, []), directory)
    return directory


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, plugins, tokenizer_dir):
    single = train(
        load_recipe(write_recipe(tmp_path / "single.yaml", _recipe(tmp_path, "single", tokenizer_dir)), plugins=plugins), plugins
    )

    recipe = write_recipe(tmp_path / "ddp.yaml", _recipe(tmp_path, "ddp", tokenizer_dir, devices=2, strategy="ddp"))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("ddp_worker.py")), str(recipe), str(dumps)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Both ranks hold bit-identical weights, and rank 0 wrote them as the checkpoint.
    rank0, rank1 = load_file(str(dumps / "rank0.safetensors")), load_file(str(dumps / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys() and len(rank0) > 0
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    saved = store.load_model_state(tmp_path / "ddp")
    for key in rank0:
        assert torch.equal(saved[key], rank0[key]), key

    # The loss of every step matches one process reading the whole global batch.
    single_losses, ddp_losses = _losses(single.history), _losses(tmp_path / "ddp" / "history.jsonl")
    assert sorted(ddp_losses) == sorted(single_losses) == list(range(1, STEPS + 1))
    for step in single_losses:
        assert ddp_losses[step] == pytest.approx(single_losses[step], rel=2e-4), (step, ddp_losses, single_losses)
    assert single_losses[STEPS] < single_losses[1]  # it trained
    # ... and so do the weights (AdamW amplifies rounding only slightly in 4 steps).
    single_weights = store.load_model_state(single.checkpoint)
    for key in rank0:
        torch.testing.assert_close(rank0[key], single_weights[key], rtol=0, atol=2e-4)
