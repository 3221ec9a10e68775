from __future__ import annotations

import pytest

from functions.adapters.memory import MemoryPublisher
from handlers.model import MAX_BATCH_SIZE
from handlers.send import BatchTooLarge, send

NOW = 1_767_225_600_000


class FixedClock:
    def now_ms(self) -> int:
        return NOW


def test_send_publishes_valid_and_reports_rejections() -> None:
    publisher = MemoryPublisher()
    result = send(
        [{"room": "r", "user": "u", "text": "one"}, {"room": "r"}, {"room": "r", "user": "u", "text": "two"}],
        publisher,
        FixedClock(),
    )
    assert [b.text for b in result.accepted] == ["one", "two"]
    assert result.accepted_ids == [b.id for b in publisher.published]
    assert [(r.index, r.field) for r in result.rejected] == [(1, "user")]
    assert all(b.sent_at == NOW for b in result.accepted)


def test_send_rejects_an_id_repeated_in_one_request() -> None:
    item = {"id": "same", "room": "r", "user": "u", "text": "x"}
    result = send([item, item], MemoryPublisher(), FixedClock())
    assert result.accepted_ids == ["same"]
    assert result.rejected[0].reason == "repeated in this request"


def test_send_reports_unconfirmed_barrages_as_failed() -> None:
    publisher = MemoryPublisher(lambda b: "broker down" if b.text == "bad luck" else None)
    result = send(
        [{"room": "r", "user": "u", "text": "fine"}, {"room": "r", "user": "u", "text": "bad luck"}],
        publisher,
        FixedClock(),
    )
    assert [b.text for b in result.accepted] == ["fine"]
    assert list(result.failed.values()) == ["broker down"]


def test_send_with_nothing_valid_publishes_nothing() -> None:
    publisher = MemoryPublisher()
    assert send([{}], publisher, FixedClock()).accepted == []
    assert publisher.published == []


def test_batch_bound() -> None:
    with pytest.raises(BatchTooLarge):
        send([{}] * (MAX_BATCH_SIZE + 1), MemoryPublisher(), FixedClock())
