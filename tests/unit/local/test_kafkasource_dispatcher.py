from __future__ import annotations

import pytest

from local.kafkasource.dispatcher import OffsetTracker, is_retryable


@pytest.mark.parametrize(
    ("status", "retry"),
    [(None, True), (500, True), (503, True), (404, True), (408, True), (409, True), (429, True),
     (400, False), (401, False), (403, False), (413, False), (422, False)],
)
def test_retryable_statuses_follow_kafkasource(status: int | None, retry: bool) -> None:
    assert is_retryable(status) is retry


def test_commit_only_up_to_the_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.add(offset)
    tracker.finish(12)
    tracker.finish(11)
    assert tracker.to_commit() is None  # 10 is still in flight
    tracker.finish(10)
    assert tracker.to_commit() == 13
    tracker.committed(13)
    assert tracker.to_commit() is None
    assert tracker.outstanding() == 1
    tracker.finish(13)
    assert tracker.to_commit() == 14 and tracker.outstanding() == 0


def test_finishing_an_unknown_offset_changes_nothing() -> None:
    tracker = OffsetTracker()
    tracker.add(5)
    tracker.finish(99)
    assert tracker.to_commit() is None
