"""What a plugin author sees: `plugins` lists the block classes each plugin declares, and
`new-plugin` warns when its package name is already taken."""

from __future__ import annotations

from torch import nn

from modal_core import hookimpl
from modal_core.cli import main


class _Block(nn.Module):
    """A repeated block a plugin declares."""


class _DeclaresBlocks:
    @hookimpl
    def modal_core_block_classes(self):
        return [_Block]


def test_plugins_lists_the_block_classes_each_plugin_declares(plugins, capsys):
    plugins.register(_DeclaresBlocks(), name="blocky")
    assert main(["plugins"], plugins=plugins) == 0
    out = capsys.readouterr().out
    assert "blocky  (" in out and f"    block classes: {__name__}._Block" in out
    assert [info.block_classes for info in plugins.describe() if info.name == "blocky"] == [[f"{__name__}._Block"]]


def test_new_plugin_warns_when_its_package_is_already_importable(tmp_path, plugins, capsys):
    assert main(["new-plugin", "errors_demo", "--out", str(tmp_path / "fresh")], plugins=plugins) == 0
    assert "warning" not in capsys.readouterr().err
    (tmp_path / "modal_core_taken").mkdir()
    (tmp_path / "modal_core_taken" / "__init__.py").write_text("")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        assert main(["new-plugin", "taken", "--out", str(tmp_path / "second")], plugins=plugins) == 0
    finally:
        sys.path.remove(str(tmp_path))
    assert "warning: a package named modal_core_taken is already importable" in capsys.readouterr().err
