"""The `modal-core` command in a subprocess, as users run it."""

from __future__ import annotations

from conftest import REPO, run_cli, tiny_quickstart_text_overrides, tiny_text_recipe, write_recipe


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("modal-core ")
    result = run_cli()
    assert result.returncode == 2 and "train" in result.stdout and "recipes" in result.stdout


def test_recipes_lists_shipped_recipes_with_descriptions():
    result = run_cli("recipes")
    assert result.returncode == 0, result.stderr
    assert "quickstart/text.yaml" in result.stdout
    assert "Tiny Llama language model" in result.stdout


def test_train_runs_and_resumes_from_the_command_line(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run", trainer={"max_steps": 2}))
    result = run_cli("train", str(recipe), "trainer.max_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step-000003" / "model.safetensors").is_file()
    result = run_cli("train", str(recipe), "trainer.max_steps=4", f"resume={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step-000004").is_dir()


def test_train_takes_a_shipped_recipe_by_name_from_any_folder(tmp_path):
    result = run_cli("train", "quickstart/text", f"output_dir={tmp_path / 'run'}", *tiny_quickstart_text_overrides(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step-000001" / "model.safetensors").is_file()
    assert "description: Tiny Llama language model" in (tmp_path / "run" / "recipe.yaml").read_text()


def test_user_errors_print_one_line_without_traceback(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run"))
    result = run_cli("train", str(recipe), "trainer.max_stepz=3")
    assert result.returncode == 1
    assert "error: command-line overrides: unknown key 'trainer.max_stepz'" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli("--debug", "train", str(recipe), "trainer.max_stepz=3")
    assert result.returncode == 1 and "Traceback" in result.stderr
    result = run_cli("train", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1 and "recipe file not found" in result.stderr


def test_console_script_is_installed():
    import shutil
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "modal-core"
    assert script.is_file() or shutil.which("modal-core"), "pip install -e . should install the modal-core script"
    assert (REPO / "pyproject.toml").read_text().count('modal-core = "modal_core.cli:main"') == 1


def test_decoding_commands_take_a_compile_mode():
    from modal_core.cli import build_parser
    from modal_core.plugins import get_plugin_manager

    parser = build_parser(get_plugin_manager())
    for command in (["generate", "ckpt", "--prompt", "x"], ["understand", "ckpt", "--question", "q"], ["serve", "ckpt"]):
        assert parser.parse_args([*command, "--compile", "reduce-overhead"]).compile == "reduce-overhead"
        assert parser.parse_args(command).compile is None
    result = run_cli("generate", "ckpt", "--prompt", "x", "--compile", "fast")
    assert result.returncode == 2 and "invalid choice: 'fast'" in result.stderr


def test_generate_takes_a_decoding_method():
    from modal_core.cli import build_parser
    from modal_core.plugins import get_plugin_manager

    parser = build_parser(get_plugin_manager())
    command = ["generate", "ckpt", "--prompt", "x"]
    assert parser.parse_args(command).decoding == "ar"
    assert parser.parse_args([*command, "--decoding", "sjd:8"]).decoding == "sjd:8"
    result = run_cli(*command, "--decoding", "beam")
    assert result.returncode == 2 and "decoding 'beam': expected one of ar, sjd, zipar" in result.stderr
