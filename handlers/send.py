"""Sending: validate what people posted, stamp it, publish it.

Validation (``prepare``) is pure and synchronous; publishing goes through a ``Publisher``
(``send``) or is awaited through an ``AsyncPublisher`` (``send_async``); ``settle`` turns the
publisher's answer into the per-item result. Both paths give the same ``SendResult``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from handlers.model import MAX_BATCH_SIZE, Barrage, ValidationError, parse_submission
from handlers.ports import AsyncPublisher, Clock, Publisher, PublishError


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class SendResult:
    accepted: list[Barrage] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # Valid barrages the publisher could not confirm: id -> reason. Safe to resend with the
    # same id (processing is idempotent by id).
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def accepted_ids(self) -> list[str]:
        return [b.id for b in self.accepted]


@dataclass(frozen=True, slots=True)
class Prepared:
    """The submissions of one request, validated and stamped: what to publish, what not."""

    valid: list[Barrage]
    rejected: list[Rejection]


class BatchTooLarge(ValueError):
    pass


def prepare(submissions: Sequence[object], clock: Clock) -> Prepared:
    """Validate and stamp each submission (no I/O); raises ``BatchTooLarge`` beyond the batch bound."""
    if len(submissions) > MAX_BATCH_SIZE:
        raise BatchTooLarge(f"at most {MAX_BATCH_SIZE} barrages per request, got {len(submissions)}")
    now = clock.now_ms()
    valid: list[Barrage] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, submission in enumerate(submissions):
        try:
            barrage = parse_submission(submission, now)
        except ValidationError as exc:
            rejected.append(Rejection(index, exc.field, exc.reason))
            continue
        if barrage.id in seen:
            rejected.append(Rejection(index, "id", "repeated in this request"))
            continue
        seen.add(barrage.id)
        valid.append(barrage)
    return Prepared(valid, rejected)


def settle(prepared: Prepared, error: PublishError | None = None) -> SendResult:
    """The result once the publisher answered: ``error`` is its ``PublishError``, if it raised one."""
    if error is None:
        return SendResult(list(prepared.valid), prepared.rejected)
    accepted = [b for b in prepared.valid if b.id not in error.failed]
    failed = {b.id: error.failed[b.id] for b in prepared.valid if b.id in error.failed}
    return SendResult(accepted, prepared.rejected, failed)


def send(submissions: Sequence[object], publisher: Publisher, clock: Clock) -> SendResult:
    """Validate each submission, publish the valid ones, report per item."""
    prepared = prepare(submissions, clock)
    if not prepared.valid:
        return SendResult([], prepared.rejected)
    try:
        publisher.publish_many(prepared.valid)
    except PublishError as exc:
        return settle(prepared, exc)
    return settle(prepared)


async def send_async(submissions: Sequence[object], publisher: AsyncPublisher, clock: Clock) -> SendResult:
    """``send`` for an event loop: validation runs inline, the publish is awaited."""
    prepared = prepare(submissions, clock)
    if not prepared.valid:
        return SendResult([], prepared.rejected)
    try:
        await publisher.publish_many(prepared.valid)
    except PublishError as exc:
        return settle(prepared, exc)
    return settle(prepared)
