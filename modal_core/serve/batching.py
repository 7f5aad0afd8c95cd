"""A bounded request queue and the one worker thread that owns the model.

Requests wait in arrival order. The worker takes the oldest one and, with it, every
waiting request of the same kind and the same batch key (for images: n, cfg,
temperature, top-k/p, seed) up to the kind's size limit, and answers them with one model
call. Requests that do not fit keep their place for the next call. A full queue refuses
new work at once (`QueueFullError`) instead of growing without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from modal_core.errors import ModalCoreError, ServeError

log = logging.getLogger(__name__)

Runner = Callable[[list[Any]], list[Any]]
"""Answers a batch: payloads of compatible requests -> one result per payload, in order."""


class QueueFullError(ServeError):
    """The queue holds its maximum of waiting requests; the client should retry later."""


@dataclass(frozen=True)
class Answer:
    """What a request's future resolves to."""

    result: Any
    batched_with: int
    """Requests answered by the same model call, this one included."""


@dataclass(eq=False)
class Job:
    kind: str
    key: Hashable
    size: int
    """Units of the kind's batch limit this request takes (images, questions)."""
    payload: Any
    ticket: str | None = None
    """The client's name for the request, to ask where it stands (`BatchingQueue.where`)."""
    future: Future = field(default_factory=Future)


@dataclass
class KindStats:
    batches: int = 0
    requests: int = 0
    largest_batch: int = 0
    shared_batches: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Running:
    kind: str
    requests: int
    items: int
    started: float
    tickets: frozenset[str] = frozenset()


class BatchingQueue:
    """Queue requests of several kinds and answer compatible ones together on one thread."""

    def __init__(self, runners: dict[str, Runner], limits: dict[str, int], max_pending: int, batch_wait_s: float = 0.0) -> None:
        self._runners = runners
        self._limits = limits
        self._max_pending = max_pending
        self._batch_wait_s = batch_wait_s
        self._pending: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._running: Running | None = None
        self._stats = {kind: KindStats() for kind in runners}
        self._thread = threading.Thread(target=self._work, name="modal-core-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the worker after its current batch; waiting requests fail with ServeError."""
        with self._ready:
            self._closed = True
            abandoned = list(self._pending)
            self._pending.clear()
            self._ready.notify_all()
        for job in abandoned:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ServeError("the server is shutting down"))
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, kind: str, key: Hashable, size: int, payload: Any, ticket: str | None = None) -> Future:
        """Queue one request; its future resolves to an `Answer` or raises the model's error.
        Cancelling the future before the worker takes it drops the request."""
        if size > self._limits[kind]:
            raise ServeError(f"a {kind} request of size {size} exceeds the batch limit {self._limits[kind]}")
        job = Job(kind, key, size, payload, ticket)
        with self._ready:
            if self._closed:
                raise ServeError("the server is shutting down")
            if len(self._pending) >= self._max_pending:
                raise QueueFullError(f"the server is busy: its queue of {self._max_pending} waiting requests is full; retry shortly")
            self._pending.append(job)
            self._ready.notify()
        return job.future

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def capacity(self) -> int:
        return self._max_pending

    @property
    def running(self) -> Running | None:
        return self._running

    def where(self, ticket: str) -> tuple[str, int] | None:
        """Where the request with this ticket stands: ("running", 0), ("waiting", requests
        ahead of it), or None when no queued or running request has it."""
        with self._ready:
            running = self._running
            if running and ticket in running.tickets:
                return "running", 0
            live = [job for job in self._pending if not job.future.cancelled()]
        return next((("waiting", ahead) for ahead, job in enumerate(live) if job.ticket == ticket), None)

    def stats(self) -> dict[str, KindStats]:
        with self._ready:
            return {kind: KindStats(**vars(stats)) for kind, stats in self._stats.items()}

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
            if self._batch_wait_s:
                time.sleep(self._batch_wait_s)  # let requests that arrive together share the call
            with self._ready:  # taken and marked running at once, so `where` never loses a request
                batch = self._take_batch()
                if batch:
                    tickets = frozenset(job.ticket for job in batch if job.ticket)
                    self._running = Running(batch[0].kind, len(batch), sum(job.size for job in batch), time.monotonic(), tickets)
            if batch:
                try:
                    self._run(batch)
                finally:
                    self._running = None

    def _take_batch(self) -> list[Job]:
        """The oldest live request and the waiting ones compatible with it, within the limit."""
        batch: list[Job] = []
        kept: deque[Job] = deque()
        for job in self._pending:
            if job.future.cancelled():
                continue  # timed out while waiting: nobody wants the answer
            head = batch[0] if batch else None
            fits = head is None or (
                job.kind == head.kind and job.key == head.key and sum(j.size for j in batch) + job.size <= self._limits[head.kind]
            )
            if fits and job.future.set_running_or_notify_cancel():
                batch.append(job)
            elif not job.future.cancelled():
                kept.append(job)
        self._pending = kept
        return batch

    def _run(self, batch: list[Job]) -> None:
        kind = batch[0].kind
        try:
            results = self._runners[kind]([job.payload for job in batch])
        except ModalCoreError as error:
            if len(batch) > 1:
                # One request's bad input must not fail the requests that shared its batch.
                for job in batch:
                    self._run([job])
                return
            self._record(kind, batch, failed=1)
            batch[0].future.set_exception(error)
            return
        except Exception as error:  # a bug or an out-of-memory: answer every request, keep serving
            log.exception("%s batch of %d requests failed", kind, len(batch))
            self._record(kind, batch, failed=len(batch))
            for job in batch:
                job.future.set_exception(error)
            return
        self._record(kind, batch, failed=0)
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(Answer(result, len(batch)))

    def _record(self, kind: str, batch: list[Job], failed: int) -> None:
        with self._ready:
            stats = self._stats[kind]
            stats.batches += 1
            stats.requests += len(batch)
            stats.largest_batch = max(stats.largest_batch, len(batch))
            stats.shared_batches += len(batch) > 1
            stats.failed += failed
