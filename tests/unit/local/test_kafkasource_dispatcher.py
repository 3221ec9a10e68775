from __future__ import annotations

import base64

import pytest

from local.kafkasource.dispatcher import OffsetTracker, Reply, dead_letter_extensions, is_retryable


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


def test_dead_letter_extensions_with_a_reply() -> None:
    body = b"A" * 1030
    reply = Reply(422, (("Kne-TestError", "hello"), ("kne-bad_name", "x"), ("something", "nope")), body)
    extensions = dead_letter_extensions("http://sink/", reply, None)
    assert extensions == {
        "testerror": "hello",  # kne- stripped and lower-cased, as EKB does
        "knativeerrorcode": "422",
        "knativeerrordata": base64.b64encode(b"A" * 1024).decode(),  # at most 1024 bytes
        "knativeerrordest": "http://sink/",
    }
    assert "knativeerrorreason" not in extensions


def test_dead_letter_extensions_without_a_reply() -> None:
    # A transport error: EKB only names the destination; no code, since nothing answered.
    assert dead_letter_extensions("http://sink/", None, None) == {"knativeerrordest": "http://sink/"}
    # A record that could not be mapped (no request at all): the reason is the error data.
    extensions = dead_letter_extensions("http://sink/", None, "record has no value")
    assert base64.b64decode(extensions["knativeerrordata"]) == b"record has no value"
    assert "knativeerrorcode" not in extensions
    # An empty reply body carries no data.
    assert "knativeerrordata" not in dead_letter_extensions("http://sink/", Reply(500, (), b""), None)
