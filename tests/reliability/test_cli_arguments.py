"""Flags out of range are refused while the command line is parsed: one `error: argument
--flag: ...` line naming what is allowed, exit code 2, nothing run."""

from __future__ import annotations

import pytest

from modal_core.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "ckpt", "--prompt", "a", "--out", "{file}"], "argument --out: {file} is a file; expected a folder to write into"),
        (["generate", "ckpt", "--prompt", "a", "--device", "banana"], "argument --device: 'banana' is not a torch device"),
        (["generate", "ckpt", "--prompt", "a", "--seed", "18446744073709551616"], "argument --seed: 18446744073709551616 is out of range"),
        (["generate", "ckpt", "--prompt", "a", "--seed", "-1"], "argument --seed: -1 is out of range: a seed is an integer from 0"),
        (["generate", "ckpt", "--prompt", " "], "argument --prompt: must not be empty"),
        (["understand", "ckpt", "--question", ""], "argument --question: must not be empty"),
        (["understand", "ckpt", "--question", "q", "--seed", "x"], "argument --seed: 'x' is not an integer"),
        (["serve", "ckpt", "--port", "99999"], "argument --port: 99999 is not a TCP port: expected 0 (any free port) to 65535"),
        (["eval", "ckpt", "--suite", "vqa", "--device", "cuda:7"], "argument --device: cuda:7"),
    ],
)
def test_a_flag_out_of_range_is_refused_at_parse_time(tmp_path, plugins, capsys, argv, message):
    file = tmp_path / "taken.png"
    file.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main([item.format(file=file) for item in argv], plugins=plugins)
    assert exit_.value.code == 2
    assert message.format(file=file) in capsys.readouterr().err


def test_the_quickstart_scale_must_be_positive(image_plugins, capsys):
    with pytest.raises(SystemExit):
        main(["quickstart", "--scale", "-1"], plugins=image_plugins)
    assert "argument --scale: -1 must be above 0" in capsys.readouterr().err


def test_debug_is_taken_after_the_command_too(tmp_path, plugins, capsys):
    assert main(["train", str(tmp_path / "nope.yaml"), "--debug"], plugins=plugins) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: recipe file not found")


def test_recipes_lists_the_good_files_and_names_the_broken_one(tmp_path, plugins, capsys):
    (tmp_path / "good.yaml").write_text("description: fine\n")
    (tmp_path / "broken.yaml").write_text("description: [unclosed\n")
    assert main(["recipes", "--dir", str(tmp_path)], plugins=plugins) == 1
    captured = capsys.readouterr()
    assert captured.out.split() == ["good.yaml", "fine"]
    assert captured.err.startswith(f"error: {tmp_path / 'broken.yaml'}: not valid YAML")
