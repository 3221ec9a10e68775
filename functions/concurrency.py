"""A local stand-in for Knative's queue-proxy: ``containerConcurrency`` as a hard limit.

At most ``limit`` requests run at once; up to ``queue_factor * limit`` more wait; beyond
that the answer is 503 at once, as queue-proxy answers "pending request queue full"
(KafkaSource retries a 503). ``limit`` 0 means unlimited, as in Knative.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class QueueFull(Exception):
    pass


class ConcurrencyLimiter:
    def __init__(self, limit: int, queue_factor: int = 10) -> None:
        if limit < 0:
            raise ValueError("containerConcurrency must be >= 0")
        self.limit = limit
        self.queue_capacity = limit * queue_factor
        self._running = threading.Semaphore(limit) if limit else None
        self._lock = threading.Lock()
        self._admitted = 0  # running plus queued

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self._running is None:
            yield
            return
        with self._lock:
            if self._admitted >= self.limit + self.queue_capacity:
                raise QueueFull(f"pending request queue full ({self.queue_capacity} queued, {self.limit} running)")
            self._admitted += 1
        try:
            with self._running:
                yield
        finally:
            with self._lock:
                self._admitted -= 1
