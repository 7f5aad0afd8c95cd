"""`modal-core train` prints its own progress in optimizer steps and none of Lightning's
start-up chatter."""

from __future__ import annotations

from conftest import run_cli, tiny_text_recipe, write_recipe


def test_train_prints_steps_and_no_lightning_noise(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run", trainer={"max_steps": 6, "progress_bar": True}))
    result = run_cli("train", str(recipe))
    assert result.returncode == 0, result.stderr[-2000:]
    printed = result.stdout + result.stderr
    for noise in ("GPU available", "TPU available", "litlogger", "LeafSpec", "Epoch 0/", "Trainer.fit` stopped", "Training:"):
        assert noise not in printed, noise
    assert "step: 100%" in printed and "6/6" in printed
    assert result.stdout.strip().splitlines()[-1] == f"done: checkpoint {(tmp_path / 'run' / 'checkpoints' / 'step-000006').resolve()}"
