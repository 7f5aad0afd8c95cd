"""The batching queue on its own: which waiting requests share a call, in which order,
and what happens to cancelled, failing and abandoned ones. Requests are queued before the
worker starts, so the batches are exactly determined."""

from __future__ import annotations

import threading
import time

import pytest

from modal_core.errors import ModelInputError, ServeError
from modal_core.serve.batching import BatchingQueue, QueueFullError


class Recorder:
    """A runner that doubles numbers and remembers every call's payloads."""

    def __init__(self) -> None:
        self.calls: list[list] = []

    def __call__(self, payloads: list) -> list:
        self.calls.append(list(payloads))
        if any(p < 0 for p in payloads):
            raise ModelInputError(f"negative payload in {payloads}")
        return [2 * p for p in payloads]


def _queue(recorder: Recorder, max_pending: int = 10) -> BatchingQueue:
    return BatchingQueue({"double": recorder, "other": recorder}, {"double": 4, "other": 4}, max_pending=max_pending)


def test_compatible_requests_share_a_call_within_the_limit_in_arrival_order():
    recorder = Recorder()
    queue = _queue(recorder)
    futures = [
        queue.submit("double", "a", 2, 1),
        queue.submit("double", "b", 1, 2),  # another key: waits for its own call
        queue.submit("double", "a", 2, 3),
        queue.submit("double", "a", 1, 4),  # would exceed the limit of 4 with the first two
        queue.submit("other", "a", 1, 5),  # another kind never joins
        queue.submit("double", "b", 1, 6),
    ]
    queue.start()
    answers = [future.result(timeout=10) for future in futures]
    queue.close()
    assert recorder.calls == [[1, 3], [2, 6], [4], [5]]
    assert [a.result for a in answers] == [2, 4, 6, 8, 10, 12]
    assert [a.batched_with for a in answers] == [2, 2, 2, 1, 1, 2]
    stats = queue.stats()["double"]
    assert (stats.batches, stats.requests, stats.largest_batch, stats.shared_batches, stats.failed) == (3, 5, 2, 2, 0)


def test_a_bad_request_fails_alone_and_cancelled_ones_are_dropped():
    recorder = Recorder()
    queue = _queue(recorder)
    good, bad, cancelled, other = (queue.submit("double", "k", 1, p) for p in (1, -1, 7, 2))
    assert cancelled.cancel()
    queue.start()
    assert good.result(timeout=10).result == 2 and other.result(timeout=10).result == 4
    with pytest.raises(ModelInputError, match=r"negative payload in \[-1\]"):
        bad.result(timeout=10)
    queue.close()
    assert recorder.calls == [[1, -1, 2], [1], [-1], [2]]  # the shared call failed, then each ran alone
    assert queue.stats()["double"].failed == 1


def test_a_full_queue_refuses_and_closing_fails_the_waiting():
    queue = _queue(Recorder(), max_pending=2)
    waiting = [queue.submit("double", "k", 1, p) for p in (1, 2)]
    with pytest.raises(QueueFullError, match="queue of 2 waiting requests is full"):
        queue.submit("double", "k", 1, 3)
    with pytest.raises(ServeError, match="exceeds the batch limit 4"):
        queue.submit("double", "k", 5, 3)
    queue.close()
    for future in waiting:
        with pytest.raises(ServeError, match="shutting down"):
            future.result(timeout=10)


def test_where_says_whether_a_request_waits_behind_how_many_or_runs():
    release = threading.Event()

    def slow(payloads: list) -> list:
        release.wait(timeout=30)
        return payloads

    queue = BatchingQueue({"slow": slow}, {"slow": 1}, max_pending=10)
    queue.submit("slow", "a", 1, 1, ticket="first")
    queue.submit("slow", "a", 1, 2, ticket="gone").cancel()
    queue.submit("slow", "a", 1, 3, ticket="third")
    assert queue.where("first") == ("waiting", 0)
    assert queue.where("third") == ("waiting", 1)  # the cancelled request is not ahead of it
    assert queue.where("gone") is None and queue.where("never-sent") is None
    queue.start()
    try:
        deadline = time.monotonic() + 30
        while queue.where("first") != ("running", 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue.where("first") == ("running", 0) and queue.where("third") == ("waiting", 0)
    finally:
        release.set()
        queue.close()
