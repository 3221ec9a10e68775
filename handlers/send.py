"""Sending: validate what people posted, stamp it, publish it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from handlers.model import MAX_BATCH_SIZE, Barrage, ValidationError, parse_submission
from handlers.ports import Clock, Publisher, PublishError


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


class BatchTooLarge(ValueError):
    pass


def send(submissions: Sequence[object], publisher: Publisher, clock: Clock) -> SendResult:
    """Validate each submission, publish the valid ones, report per item."""
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
    if not valid:
        return SendResult([], rejected)
    try:
        publisher.publish_many(valid)
    except PublishError as exc:
        accepted = [b for b in valid if b.id not in exc.failed]
        failed = {b.id: exc.failed[b.id] for b in valid if b.id in exc.failed}
        return SendResult(accepted, rejected, failed)
    return SendResult(valid, rejected)
