"""`modal-core serve` user errors end in one line and exit 1, before any model loads."""

from __future__ import annotations

import socket

import pytest

from modal_core.cli import main


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_missing_checkpoint_is_one_line(serve_plugins, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nowhere"), "--port", "0"], plugins=serve_plugins) == 1
    assert "nowhere" in _error_line(capsys)


def test_a_busy_port_is_one_line(serve_plugins, tmp_path, capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)], plugins=serve_plugins) == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in _error_line(capsys)


LIMITS = [("--max-queue", "0", "max-queue must be >= 1"), ("--timeout", "0", "timeout must be > 0")]


@pytest.mark.parametrize(("flag", "value", "words"), LIMITS)
def test_impossible_limits_are_one_line(serve_plugins, tmp_path, capsys, flag, value, words):
    assert main(["serve", str(tmp_path), flag, value], plugins=serve_plugins) == 1
    assert words in _error_line(capsys)
