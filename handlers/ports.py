"""The ports: what the handlers need from the outside world, as ``typing.Protocol``s.

Adapters in ``functions.adapters`` implement these; the handlers never import an SDK.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from handlers.model import Barrage, ProcessedBarrage


class PublishError(Exception):
    """Some barrages were not published; ``failed`` maps barrage id to the reason.

    Ids absent from ``failed`` were acknowledged. An adapter raises this rather than
    report success for a record it is not sure of.
    """

    def __init__(self, failed: dict[str, str]) -> None:
        first = next(iter(failed.items()), ("?", "unknown"))
        super().__init__(f"{len(failed)} barrage(s) not published; first {first[0]}: {first[1]}")
        self.failed = failed


class InvalidCursor(ValueError):
    """A cursor token that this store did not issue (garbage, truncated or forged)."""


class PutStatus(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PutResult:
    id: str
    status: PutStatus
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Page:
    """Results in display order (oldest first) and the cursor to continue after them."""

    items: list[ProcessedBarrage]
    cursor: str


class Publisher(Protocol):
    def publish_many(self, barrages: Sequence[Barrage]) -> None:
        """Return once every barrage is durably accepted, or raise ``PublishError``."""
        ...


class AsyncPublisher(Protocol):
    """``Publisher`` for an event loop: awaiting it never blocks the loop.

    Same contract: return once every barrage is durably accepted (the broker's own
    acknowledgement, not a local queue), or raise ``PublishError`` naming each one that is not.
    """

    async def publish_many(self, barrages: Sequence[Barrage]) -> None: ...


class ResultStore(Protocol):
    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        """Store each result once by id; one ``PutResult`` per input, in input order.

        A result whose id is already stored is ``DUPLICATE`` and changes nothing.
        ``FAILED`` means not stored, and is worth retrying.
        """
        ...

    def latest(self, room: str, limit: int) -> Page:
        """The newest ``limit`` results of ``room``, oldest first, with a cursor after them."""
        ...

    def since(self, room: str, cursor: str | None, limit: int) -> Page:
        """Up to ``limit`` results stored after ``cursor`` (from the start when None).

        Raises ``InvalidCursor`` for a token this store did not issue. Polling with the
        returned cursor never skips a result, including one stored late.
        """
        ...


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
