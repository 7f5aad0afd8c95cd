"""A full disk ends a run with one line naming what was being written, and leaves no
partial checkpoint or image behind."""

from __future__ import annotations

import errno

import pytest
from conftest import tiny_text_recipe, write_recipe
from PIL import Image

from modal_core import cli
from modal_core.checkpoints import store
from modal_core.disk import written_whole
from modal_core.errors import StorageError


def _fill_then_fail(path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_training_on_a_full_disk_is_one_error_line_and_leaves_no_partial_checkpoint(tmp_path, plugins, monkeypatch, capsys):
    monkeypatch.setattr(store, "save_hashed", lambda tensors, path, metadata=None: _fill_then_fail(path, b"x" * 1000))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_text_recipe(tmp_path / "run", trainer={"max_steps": 2}))
    code = cli.main(["train", str(recipe)], plugins=plugins)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith(f"error: no space left on device while writing {tmp_path / 'run' / 'checkpoints' / 'step-000002'}")
    assert "more than the 1000 bytes written" in err[-1]
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []  # the half-written temporary folder is gone


def test_an_image_cut_short_by_a_full_disk_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(Image.Image, "save", lambda self, path, *a, **k: _fill_then_fail(path, b"\x89PNG"))
    target = tmp_path / "prompt00_000.png"
    with pytest.raises(StorageError, match=r"while writing .*prompt00_000\.png; it needs more than the 4 bytes written"):
        with written_whole(target):
            Image.new("RGB", (4, 4)).save(target)
    assert not target.exists()


def test_other_os_errors_pass_through(tmp_path):
    with pytest.raises(PermissionError):
        with written_whole(tmp_path / "x"):
            raise PermissionError(errno.EACCES, "denied")
