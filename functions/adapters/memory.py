"""In-memory adapters: for unit tests and the single-process ``--bus memory`` mode."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from handlers import cursor
from handlers.model import Barrage, ProcessedBarrage
from handlers.ports import Clock, InvalidCursor, Page, PublishError, PutResult, PutStatus, ResultStore
from handlers.process import OutcomeStatus, ProcessConfig, process

CURSOR_KIND = "memory"


class MemoryResultStore:
    """Keeps results in arrival order per room; the cursor is a position in that order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        self._rooms: dict[str, list[ProcessedBarrage]] = {}

    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        outcomes = []
        with self._lock:
            for result in results:
                if result.id in self._ids:
                    outcomes.append(PutResult(result.id, PutStatus.DUPLICATE))
                    continue
                self._ids.add(result.id)
                self._rooms.setdefault(result.room, []).append(result)
                outcomes.append(PutResult(result.id, PutStatus.STORED))
        return outcomes

    def latest(self, room: str, limit: int) -> Page:
        with self._lock:
            items = self._rooms.get(room, [])
            return Page(items[-limit:] if limit > 0 else [], cursor.encode(CURSOR_KIND, {"n": len(items)}))

    def since(self, room: str, cursor_token: str | None, limit: int) -> Page:
        start = 0
        if cursor_token is not None:
            position = cursor.decode(CURSOR_KIND, cursor_token).get("n")
            if not isinstance(position, int) or position < 0:
                raise InvalidCursor("cursor is not a token issued by this service")
            start = position
        with self._lock:
            items = self._rooms.get(room, [])[start : start + limit]
            return Page(list(items), cursor.encode(CURSOR_KIND, {"n": start + len(items)}))

    def count(self) -> int:
        with self._lock:
            return len(self._ids)


class MemoryPublisher:
    """Collects what is published; ``fail_ids`` lets unit tests make chosen barrages fail."""

    def __init__(self, fail_ids: Callable[[Barrage], str | None] | None = None) -> None:
        self.published: list[Barrage] = []
        self._fail = fail_ids
        self._lock = threading.Lock()

    def publish_many(self, barrages: Sequence[Barrage]) -> None:
        failed: dict[str, str] = {}
        with self._lock:
            for barrage in barrages:
                reason = self._fail(barrage) if self._fail else None
                if reason:
                    failed[barrage.id] = reason
                else:
                    self.published.append(barrage)
        if failed:
            raise PublishError(failed)


class InProcessPublisher:
    """The ``--bus memory`` publisher: processes barrages straight into the store.

    A barrage counts as published once it is stored or known to be a duplicate; one the
    processor rejects for good (text empty after cleaning, ...) is accepted and not shown,
    as it would be on the Kafka path.
    """

    def __init__(self, store: ResultStore, clock: Clock, config: ProcessConfig) -> None:
        self._store = store
        self._clock = clock
        self._config = config

    def publish_many(self, barrages: Sequence[Barrage]) -> None:
        outcomes = process(barrages, self._store, self._clock, self._config)
        failed = {o.id: o.reason for o in outcomes if o.status is OutcomeStatus.FAILED}
        if failed:
            raise PublishError(failed)
