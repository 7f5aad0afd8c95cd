"""A tiny checkpoint with image understanding and VQ generation, and live servers for it
on 127.0.0.1: one started through the `serve` command's own set-up, others built with
`create_app` on the same loaded model to try their limits."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import tiny_image_recipe, with_image_plugins, write_recipe

from modal_core.cli import build_parser
from modal_core.plugins import PluginManager
from modal_core.serve.settings import ServeSettings

uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'modal-core[serve]'")

MODEL_GENERATION = {"cfg_schedule": "linear", "cfg_plausibility": 0.2}
"""The served model's own guidance: what a request that does not say draws with."""
UPLOAD_LIMIT_BYTES = 64 * 1024
"""The live server's --max-upload-mb, small so that an oversize upload is cheap to send."""


@pytest.fixture(scope="session")
def serve_plugins() -> PluginManager:
    return with_image_plugins(PluginManager(load_entry_points=False))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, serve_plugins) -> Path:
    """Two training steps of a tiny model that answers about images and draws 32x32 ones."""
    from modal_core.config.loader import load_recipe
    from modal_core.training.run import train

    folder = tmp_path_factory.mktemp("serve-run")
    recipe = tiny_image_recipe(folder / "run") | {"generation": MODEL_GENERATION}
    return train(load_recipe(write_recipe(folder / "recipe.yaml", recipe), plugins=serve_plugins), serve_plugins).checkpoint


class LiveServer:
    """A uvicorn server running in a background thread on a socket bound by the caller."""

    def __init__(self, server, listener: socket.socket) -> None:
        self.server = server
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)

    @property
    def app(self):
        return self.server.config.app

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the test server at {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture(scope="session")
def live_server(tiny_checkpoint, serve_plugins) -> Iterator[LiveServer]:
    """`modal-core serve CHECKPOINT --port 0 ...` set up by the command itself (the model
    loads once, the socket binds to a free port on 127.0.0.1)."""
    upload_mb = str(UPLOAD_LIMIT_BYTES / 1024 / 1024)
    argv = ["serve", str(tiny_checkpoint), "--port", "0", "--max-upload-mb", upload_mb, "--log-level", "warning"]
    from modal_core.serve.command import prepare_server

    args = build_parser(serve_plugins).parse_args(argv)
    server, listener = prepare_server(args, serve_plugins)
    assert listener.getsockname()[0] == "127.0.0.1"  # the default bind address
    with LiveServer(server, listener) as live:
        yield live


@contextmanager
def serve_pipeline(pipeline, **settings) -> Iterator[LiveServer]:
    """A server for a loaded `pipeline` on a free port of 127.0.0.1, with these limits."""
    from modal_core.serve.app import create_app

    listener = socket.create_server(("127.0.0.1", 0))
    app = create_app(pipeline, ServeSettings(**settings))
    with LiveServer(uvicorn.Server(uvicorn.Config(app, log_level="warning")), listener) as server:
        yield server


def extra_server(live: LiveServer, **settings):
    """Another server on the live server's loaded model, with other limits."""
    return serve_pipeline(live.app.state.pipeline, **settings)
