"""Defects of issue #27 (Server): bodies without Content-Length, content types, seeds,
CFG, the offline `/docs` page. Each test failed on the code before its fix."""

from __future__ import annotations

import select
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import UPLOAD_LIMIT_BYTES

BODY_LIMIT_BYTES = UPLOAD_LIMIT_BYTES + 64 * 1024
"""The live server's body limit: one upload field (image) plus the form overhead."""
SEND_BUDGET_BYTES = 32 * 1024 * 1024
"""The most a streaming test sends before it gives up waiting for the server's answer."""
CHUNK = 64 * 1024


def _stream_chunked(url: str, path: str, content_type: str, head: bytes, filler: bytes) -> tuple[bytes, int]:
    """POST a chunked body that never ends (`head`, then `filler` forever) over a raw socket:
    the server's first answer and the bytes sent when it came. Bounded by bytes and time."""
    parts = urlsplit(url)
    sent = 0
    deadline = time.monotonic() + 60
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = head
        try:
            while sent < SEND_BUDGET_BYTES and time.monotonic() < deadline:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered while the body was still streaming
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                chunk = filler
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed the connection
        answer = b""
        while time.monotonic() < deadline and select.select([sock], [], [], 5)[0]:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break  # the connection was closed with the unread body still in flight
            if not data:
                break
            answer += data
    return answer, sent


@pytest.mark.parametrize(
    ("path", "content_type", "head", "filler"),
    [
        ("/v1/generate", "application/json", b'{"prompt": "', b"a" * CHUNK),
        (
            "/v1/understand",
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n',
            b"\0" * CHUNK,
        ),
    ],
    ids=["json", "multipart"],
)
def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(live_server, path, content_type, head, filler):
    answer, sent = _stream_chunked(live_server.url, path, content_type, head, filler)
    assert answer, f"no answer after sending {sent} bytes of a body without Content-Length: the server kept reading"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert f"over this server's limit of {BODY_LIMIT_BYTES} bytes".encode() in answer, answer
    assert sent < SEND_BUDGET_BYTES


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b'{"prompt": "a red circle"}'),
        ("application/x-www-form-urlencoded", b"prompt=a+red+circle"),
        ("multipart/form-data; boundary=xyz", b'--xyz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\r\n--xyz--\r\n'),
        (None, b'{"prompt": "a red circle"}'),
    ],
    ids=["text", "urlencoded", "multipart", "none"],
)
def test_a_body_that_is_not_json_gets_415(live_server, content_type, content):
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{live_server.url}/v1/generate", content=content, headers=headers, timeout=60)
    assert response.status_code == 415, response.text
    assert "Content-Type: application/json" in response.json()["detail"]


def test_a_random_draw_returns_the_seed_it_used(live_server):
    body = {"prompt": "a red circle", "n": 2, "temperature": 1.0, "seed": None}
    first = httpx.post(f"{live_server.url}/v1/generate", json=body, timeout=60).json()
    assert isinstance(first["seed"], int) and 0 <= first["seed"] < 2**53 and first["batched_with"] == 1, first  # exact in JavaScript
    again = httpx.post(f"{live_server.url}/v1/generate", json={**body, "seed": first["seed"]}, timeout=60).json()
    assert again["seed"] == first["seed"] and again["images"] == first["images"]
    other = httpx.post(f"{live_server.url}/v1/generate", json=body, timeout=60).json()
    assert other["seed"] != first["seed"]  # a fresh draw each time


def test_no_page_needs_the_internet(live_server):
    """Swagger UI loads its scripts from a CDN (a blank page offline): it is off; the schema stays."""
    assert httpx.get(f"{live_server.url}/docs").status_code == 404
    assert httpx.get(f"{live_server.url}/openapi.json").json()["paths"]
    index = httpx.get(live_server.url).text
    assert 'href="/openapi.json"' in index and "http" not in index.replace('href="/openapi.json"', "")


def test_cfg_zero_is_documented_as_ignoring_the_prompt(live_server):
    """docs/serve.md: cfg 0 keeps only the unprompted prediction, so greedy draws for two prompts agree."""
    bodies = [{"prompt": prompt, "n": 1, "cfg": 0, "temperature": 0} for prompt in ("a red circle", "a blue square left of a triangle")]
    draws = [httpx.post(f"{live_server.url}/v1/generate", json=body, timeout=60).json()["images"] for body in bodies]
    assert draws[0] == draws[1]
