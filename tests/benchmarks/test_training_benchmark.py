"""The training benchmark compares like with like: its plain PyTorch loop and
`modal-core train` build the same weights, read the same batches and take the same
AdamW steps (gradient clipping and warm-up schedule included), so their losses agree
step by step and both windows count the same tokens and FLOPs. (Its timings are not
tested: benchmarks run on demand.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_quickstart_text_overrides

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from training import measure_modal_core_train, measure_plain_loop  # noqa: E402

from modal_core.config.loader import load_recipe  # noqa: E402
from modal_core.recipes import find  # noqa: E402

STEPS, WARMUP = 4, 1


def test_both_loops_train_the_same_model_on_the_same_batches(tmp_path, plugins):
    overrides = [*tiny_quickstart_text_overrides(), f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=1"]
    recipe = load_recipe(find("quickstart/text"), [*overrides, f"output_dir={tmp_path / 'run'}", "optim.warmup_steps=2"], plugins)
    ours = measure_modal_core_train(recipe, plugins, WARMUP, time.perf_counter)
    plain = measure_plain_loop(recipe, plugins, WARMUP, time.perf_counter)
    assert sorted(ours.losses) == sorted(plain.losses) == list(range(1, STEPS + 1))
    for step, loss in plain.losses.items():
        assert ours.losses[step] == pytest.approx(loss, rel=1e-6), (step, ours.losses, plain.losses)
    assert plain.losses[STEPS] < plain.losses[1]  # it trained
    assert ours.tokens == plain.tokens > 0 and ours.flops == plain.flops
    assert ours.seconds > 0 and plain.seconds > 0
