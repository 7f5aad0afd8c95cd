"""Recipe mistakes end in one `error:` line naming the key or file and what is allowed."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import tiny_text_recipe, write_recipe

from modal_core import cli


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("backbone.config.hidden_size=65", r"backbone.config: cannot build a 'llama' config \(.*hidden size \(65\) is not a multiple of"),
        ("data.sources=[{dataset: x", r"command-line overrides .*: not a valid `key=value` \(while parsing a flow mapping"),
        ("data.sources.0.options.num_sentences=[1,2]", r"data.sources\[0\].options \(shapes_text\): int\(\) argument must be"),
        ("data.sources.0.options.num_sentences=lots", r"data.sources\[0\].options \(shapes_text\): invalid literal for int\(\)"),
    ],
)
def test_a_recipe_mistake_is_one_error_line(tmp_path, plugins, capsys, override, message):
    path = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run", trainer={"max_steps": 1}))
    assert cli.main(["train", str(path), override], plugins=plugins) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert re.search(message, err[0]), err[0]


def test_a_gpu_accelerator_without_a_gpu_is_named(tmp_path, plugins, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run", trainer={"max_steps": 1}))
    assert cli.main(["train", str(path), "trainer.accelerator=gpu"], plugins=plugins) == 1
    assert (
        capsys.readouterr().err.strip() == "error: trainer.accelerator: 'gpu', but this machine has no usable CUDA GPU; use `cpu` or `auto`"
    )


def test_a_binary_file_given_as_the_recipe_is_named(tmp_path, plugins, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xf0\x28\x8c\x28")
    assert cli.main(["train", str(path)], plugins=plugins) == 1
    assert capsys.readouterr().err.strip().startswith(f"error: {path}: not a text file (a recipe is UTF-8 YAML;")


def test_a_recipe_with_a_byte_order_mark_loads(tmp_path):
    from modal_core.config.loader import load_recipe

    path = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run"))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_recipe(path).trainer.max_steps == 8
