"""The `serve` command of the `modal-core` CLI."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from typing import TYPE_CHECKING

from modal_core import arguments
from modal_core.errors import ServeError
from modal_core.generation.cli_options import add_compile_argument
from modal_core.plugins import PluginManager
from modal_core.serve.settings import ServeSettings

if TYPE_CHECKING:
    import uvicorn

SERVE_EXTRA_HINT = "pip install 'modal-core[serve]'"


def _serve(args: argparse.Namespace, plugins: PluginManager) -> int:
    server, listener = prepare_server(args, plugins)
    settings = server.config.app.state.settings
    if not settings.is_loopback:
        print(f"WARNING: listening on {settings.host}: anyone who can reach it may use the model (no authentication)", file=sys.stderr)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"serving {args.checkpoint} on http://{host}:{listener.getsockname()[1]}/ (OpenAPI schema at /openapi.json)", flush=True)
    server.run(sockets=[listener])
    return 0


def prepare_server(args: argparse.Namespace, plugins: PluginManager) -> tuple[uvicorn.Server, socket.socket]:
    """Bind the socket, load the model once, and build the (not yet running) server."""
    try:
        import uvicorn

        from modal_core.serve.app import create_app
    except ImportError as error:
        raise ServeError(f"modal-core serve needs FastAPI and uvicorn ({error.name} is missing): {SERVE_EXTRA_HINT}") from None
    from modal_core.generation.pipeline import Pipeline

    settings = ServeSettings(
        host=args.host,
        port=args.port,
        max_batch_images=args.max_batch_images,
        max_queue=args.max_queue,
        request_timeout_s=args.timeout,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_new_tokens=args.max_new_tokens,
    )
    listener = _bind(settings.host, settings.port)  # before the model loads: a busy port fails fast
    try:
        pipeline = Pipeline.load(args.checkpoint, plugins=plugins, device=args.device, compile_mode=args.compile)
    except BaseException:
        listener.close()
        raise
    app = create_app(pipeline, settings, checkpoint=str(args.checkpoint), device=args.device)
    return uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)), listener


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        reason = "the port is in use (pick another with --port)" if error.errno == errno.EADDRINUSE else error.strerror
        raise ServeError(f"cannot listen on {host}:{port}: {reason}") from None
    listener.listen(2048)
    return listener


def add_serve_command(commands) -> None:
    """Register `serve` on the CLI's sub-parsers."""
    serve = commands.add_parser("serve", help="HTTP API and web demo for a checkpoint: ask about inputs, draw images")
    serve.add_argument("checkpoint", help="checkpoint directory (or a run directory: its last checkpoint)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=arguments.port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    serve.add_argument("--device", type=arguments.device, default="cpu", help="torch device (default cpu)")
    add_compile_argument(serve)
    serve.add_argument("--max-batch-images", type=int, default=16, help="most images per decode batch, and per request (default 16)")
    serve.add_argument("--max-queue", type=int, default=64, help="requests that may wait; more are answered 503 (default 64)")
    serve.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait and run before a 504 (default 120)")
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest uploaded file in MiB (default 20)")
    serve.add_argument("--max-new-tokens", type=int, default=256, help="longest answer a client may ask for (default 256)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="server log level")
    serve.set_defaults(handler=_serve)
