"""The knobs of `modal-core serve`: where it listens and how much work it accepts."""

from __future__ import annotations

from dataclasses import dataclass

from modal_core.errors import ServeError

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Hosts reachable only from this machine; any other bind address is announced with a warning."""


@dataclass(frozen=True)
class ServeSettings:
    """Limits of one server. Every limit answers a clear 4xx/5xx instead of queueing
    without bound, so a flood of requests costs memory in proportion to `max_queue`."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default, so the demo is private unless asked otherwise."""
    port: int = 8000
    """TCP port to listen on."""
    max_batch_images: int = 16
    """Most images one decode batch draws; also the largest `n` one request may ask for."""
    max_batch_questions: int = 16
    """Most questions one understanding batch answers."""
    max_queue: int = 64
    """Requests that may wait for the model; one more is answered 503."""
    request_timeout_s: float = 120.0
    """Seconds a request may wait and run before it is answered 504."""
    batch_wait_s: float = 0.01
    """How long the worker waits after the first request of a batch for others to join."""
    max_upload_bytes: int = 20 * 1024 * 1024
    """Largest uploaded file (per input modality); larger ones are answered 413."""
    max_new_tokens: int = 256
    """Largest answer length a client may ask for."""

    def __post_init__(self) -> None:
        for name in ("max_batch_images", "max_batch_questions", "max_queue", "max_upload_bytes", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ServeError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0 or self.batch_wait_s < 0:
            raise ServeError(f"the timeout must be > 0 and the batch wait >= 0, got {self.request_timeout_s} and {self.batch_wait_s}")

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can reach the server."""
        return self.host in LOOPBACK_HOSTS
