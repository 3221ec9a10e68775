from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from local.kafkasource.dispatcher import (
    Dispatcher,
    DispatchOptions,
    OffsetTracker,
    dead_letter_extensions,
    is_retryable,
)
from local.kafkasource.manifest import load_manifest
from local.kafkasource.mapping import Record
from local.kafkasource.sink_client import Reply

MANIFEST = Path(__file__).resolve().parents[3] / "knative" / "kafkasource.yaml"


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


class IdleConsumer:
    def consume(self, max_records: int = 500, timeout_s: float = 1.0) -> list[Any]:
        return []

    def commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None: ...
    def pause(self, partitions: Sequence[tuple[str, int]]) -> None: ...
    def resume(self, partitions: Sequence[tuple[str, int]]) -> None: ...
    def close(self) -> None: ...


class RecordingTopic:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict[str, str]] = []
        self.fail = fail

    def send(self, topic: str, record: Record, error_headers: dict[str, str]) -> None:
        if self.fail:
            raise RuntimeError("broker gone")
        self.sent.append(error_headers)


@dataclass(frozen=True)
class PlainRecord:
    topic: str = "barrage-info"
    partition: int = 0
    offset: int = 3
    timestamp_ms: int | None = None
    key: bytes | None = None
    value: bytes | None = b"{}"
    headers: dict[str, bytes] = field(default_factory=dict)


def dispatcher_with(topic: RecordingTopic, retry: int = 0) -> Dispatcher:
    spec = load_manifest(MANIFEST)
    spec = replace(spec, delivery=replace(spec.delivery, retry=retry, backoff_delay_s=0))
    options = DispatchOptions(sink_url="http://127.0.0.1:9/", dead_letter_topic="barrage-info.dlq")
    return Dispatcher(spec, options, lambda _assign, _revoke: IdleConsumer(), topic, sleep=lambda _s: False)


def test_a_failure_of_our_own_dead_letters_the_record_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    topic = RecordingTopic()
    dispatcher = dispatcher_with(topic)

    def broken(_records: Sequence[Record]) -> bool:
        raise KeyError("surprise")

    monkeypatch.setattr(dispatcher, "_deliver", broken)
    assert dispatcher._finish_each([PlainRecord()]) is True  # finished: the offset may move on
    (extensions,) = topic.sent
    assert b"KeyError" in base64.b64decode(extensions["knativeerrordata"])
    assert extensions["knativekafkaoffset"] == "3" and "knativeerrorcode" not in extensions
    assert dispatcher.stats.unmappable == 1 and dispatcher.stats.dead_lettered == 1


def test_a_dead_letter_topic_that_keeps_failing_drops_after_the_retries() -> None:
    topic = RecordingTopic(fail=True)
    dispatcher = dispatcher_with(topic, retry=2)
    assert dispatcher._dead_letter_failure(PlainRecord(), "no value") is True
    assert dispatcher.stats.dropped == 1 and dispatcher.stats.dead_lettered == 0


def test_even_a_broken_dead_letter_path_does_not_hold_the_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher = dispatcher_with(RecordingTopic())

    def broken(*_args: object) -> bool:
        raise KeyError("surprise")

    monkeypatch.setattr(dispatcher, "_deliver", broken)
    monkeypatch.setattr(dispatcher, "_dead_letter_failure", broken)
    assert dispatcher._finish_each([PlainRecord(), PlainRecord(offset=4)]) is True
    assert dispatcher.stats.dropped == 2
