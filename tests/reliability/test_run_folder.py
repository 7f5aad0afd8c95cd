"""A run never writes into another run's folder unless asked, and a resumed run's
history holds every step once."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, tiny_text_recipe, write_recipe

from modal_core.checkpoints import store
from modal_core.checkpoints.run_folder import claim_run_dir, is_first_process
from modal_core.config.loader import load_recipe
from modal_core.errors import RecipeError
from modal_core.training.run import train


def _recipe(tmp_path, run_dir, max_steps, **trainer):
    settings = {"max_steps": max_steps, "checkpoint_every_n_steps": 2, "keep_last": -1, **trainer}
    return write_recipe(tmp_path / f"recipe-{max_steps}.yaml", tiny_text_recipe(run_dir, trainer=settings))


def _steps(history_path):
    return [json.loads(line)["step"] for line in history_path.read_text().splitlines()]


def _contents(run_dir):
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_second_run_into_a_used_folder_is_refused_and_the_first_run_is_untouched(tmp_path, plugins):
    run_dir = tmp_path / "run"
    train(load_recipe(_recipe(tmp_path, run_dir, 4)), plugins)
    before = _contents(run_dir)
    with pytest.raises(RecipeError, match=rf"output_dir: {run_dir} already holds a run .*resume={run_dir}.*overwrite=true"):
        train(load_recipe(_recipe(tmp_path, run_dir, 2)), plugins)
    assert _contents(run_dir) == before
    assert store.resolve_checkpoint(run_dir).name == "step-000004"


def test_overwrite_replaces_the_old_run_cleanly(tmp_path, plugins):
    run_dir = tmp_path / "run"
    train(load_recipe(_recipe(tmp_path, run_dir, 4)), plugins)
    (run_dir / "notes.txt").write_text("mine")
    result = train(load_recipe(_recipe(tmp_path, run_dir, 2), ["overwrite=true"]), plugins)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last", "step-000002"]
    assert result.checkpoint == run_dir.resolve() / "checkpoints" / "step-000002"
    assert _steps(run_dir / "history.jsonl") == [1, 2]
    assert (run_dir / "notes.txt").read_text() == "mine"  # only the run's own files are removed


def test_resume_into_its_own_folder_logs_each_step_once(tmp_path, plugins):
    run_dir = tmp_path / "run"
    path = _recipe(tmp_path, run_dir, 6)
    train(load_recipe(path), plugins)
    assert _steps(run_dir / "history.jsonl") == [1, 2, 3, 4, 5, 6]
    train(load_recipe(path, [f"resume={run_dir}/checkpoints/step-000002"]), plugins)
    assert _steps(run_dir / "history.jsonl") == [1, 2, 3, 4, 5, 6]


def test_resume_from_another_run_into_a_used_folder_is_refused(tmp_path, plugins):
    first, second = tmp_path / "first", tmp_path / "second"
    train(load_recipe(_recipe(tmp_path, first, 2)), plugins)
    train(load_recipe(_recipe(tmp_path, second, 2)), plugins)
    with pytest.raises(RecipeError, match="already holds a run"):
        train(load_recipe(_recipe(tmp_path, second, 4), [f"resume={first}"]), plugins)


def test_an_output_dir_that_is_a_file_is_named(tmp_path, plugins):
    (tmp_path / "taken").write_text("")
    with pytest.raises(RecipeError, match="output_dir: .*taken is a file; expected a directory"):
        train(load_recipe(_recipe(tmp_path, tmp_path / "taken", 2)), plugins)


def test_zero_steps_is_refused_before_anything_is_written(tmp_path):
    result = run_cli("train", str(_recipe(tmp_path, tmp_path / "run", 2)), "trainer.max_steps=0")
    assert result.returncode != 0
    assert "trainer.max_steps: must be >= 1, got 0" in result.stderr
    assert "done:" not in result.stdout
    assert not (tmp_path / "run").exists()


def test_only_the_first_process_of_a_distributed_run_claims_the_folder(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("written by rank 0")
    for name in ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert is_first_process()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a second process joins the folder rank 0 claimed
    assert not is_first_process()
    assert claim_run_dir(run_dir, None, overwrite=False, first_process=is_first_process()) == run_dir
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # the first process of the second node is not the first of the run
    assert not is_first_process()
    with pytest.raises(RecipeError, match="already holds a run"):
        claim_run_dir(run_dir, None, overwrite=False, first_process=True)
