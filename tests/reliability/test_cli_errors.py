"""Every way a user can get the command line wrong ends in one clear line, exit code 1,
no traceback; the run directory and checkpoints are left as they were."""

from __future__ import annotations

import shutil

import pytest
from conftest import tiny_text_recipe, write_recipe

from modal_core.cli import main
from modal_core.config.loader import load_recipe
from modal_core.training.run import train


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny trained text-only model: it can answer, it cannot draw."""
    from modal_core.plugins import PluginManager

    folder = tmp_path_factory.mktemp("cli_errors")
    plugins = PluginManager(load_entry_points=False)
    recipe = write_recipe(folder / "r.yaml", tiny_text_recipe(folder / "run", trainer={"max_steps": 2}))
    train(load_recipe(recipe, [], plugins), plugins)
    return folder


# argv with {folder} (the fixture's folder) and {run} (its trained run), and the message
CASES = {
    "recipe file missing": (["train", "{folder}/nope.yaml"], "recipe file not found"),
    "unknown override key": (["train", "{folder}/r.yaml", "trainer.max_stepz=3"], "unknown key 'trainer.max_stepz'"),
    "override of the wrong type": (["train", "{folder}/r.yaml", "trainer.max_steps=many"], "trainer.max_steps"),
    "resume from nothing": (["train", "{folder}/r.yaml", "resume={folder}/empty"], "no checkpoint at"),
    "checkpoint missing": (["understand", "{folder}/none", "--question", "hi"], "no checkpoint at"),
    "generate with a text-only model": (["generate", "{run}", "--prompt", "a red circle"], "output modality"),
    "negative temperature": (["understand", "{run}", "--question", "hi", "--temperature", "-1"], "temperature"),
    "answer longer than the context": (["understand", "{run}", "--question", "hi", "--max-new-tokens", "5000"], "context"),
    "truncated checkpoint": (["understand", "{folder}/truncated", "--question", "hi"], "truncated"),
}


@pytest.mark.parametrize("case", CASES)
def test_cli_user_error_is_one_line_without_traceback(text_run, case, capsys, plugins):
    (text_run / "empty").mkdir(exist_ok=True)
    truncated = text_run / "truncated"
    if not truncated.exists():
        shutil.copytree((text_run / "run" / "checkpoints" / "last").resolve(), truncated)
        with (truncated / "model.safetensors").open("r+b") as handle:
            handle.truncate(100)
    argv, message = CASES[case]
    argv = [arg.format(folder=text_run, run=text_run / "run") for arg in argv]
    assert main(argv, plugins) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error, error
    assert "Traceback" not in error and error.count("\n") == 1


def test_debug_flag_shows_the_traceback(text_run, capsys, plugins):
    assert main(["--debug", "understand", str(text_run / "none"), "--question", "hi"], plugins) == 1
    assert "Traceback" in capsys.readouterr().err
