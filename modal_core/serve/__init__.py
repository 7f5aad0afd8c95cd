"""`modal-core serve`: an HTTP API and a web demo for a loaded checkpoint.

`modal_core.serve.app.create_app(pipeline, settings)` builds the FastAPI application
(needs the `serve` extra); `modal_core.serve.command` registers the CLI command.
"""
