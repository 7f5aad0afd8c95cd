"""Refuse request bodies over the server's limit while they arrive, Content-Length or not.

A plain ASGI middleware rather than an `@app.middleware("http")` function: only the ASGI
`receive` channel sees a chunked body piece by piece, before FastAPI or the form parser
gathers it whole in memory or on disk. Kept instead of FastAPI's `max_body_size`
(Starlette's RequestBodyLimitMiddleware): that one is new in versions the `serve` extra
does not require, answers a bare "Content Too Large" that names no limit, and keeps the
connection open, reading and discarding a body that may never end.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answer 413 for a request body over `max_bytes`: at once when its Content-Length says
    so, else as soon as the bytes received pass the limit. The 413 closes the connection,
    so the rest of the body is never read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self._message(f"the request body ({int(length)} bytes)")}, 413, {"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the body read; the app's HTTPException handler answers it.
                    raise HTTPException(413, self._message(f"the request body (over {received} bytes so far)"), {"Connection": "close"})
            return message

        await self.app(scope, counting_receive, send)

    def _message(self, body: str) -> str:
        return f"{body} is over this server's limit of {self.max_bytes} bytes"
