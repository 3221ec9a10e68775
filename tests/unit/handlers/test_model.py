from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.model import (
    MAX_TEXT_LENGTH,
    Barrage,
    ProcessedBarrage,
    ValidationError,
    new_id,
    parse_barrage,
    parse_submission,
)

NOW = 1_767_225_600_000


def test_new_id_is_sortable_by_time() -> None:
    ids = [new_id(NOW + i, bytes(10)) for i in range(0, 5000, 7)]
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)
    assert new_id(NOW) != new_id(NOW)


def test_submission_gets_id_and_sent_at() -> None:
    barrage = parse_submission({"room": "r1", "user": "u_1", "text": "  hi  ", "colour": "#AABBCC"}, NOW)
    assert barrage.text == "hi" and barrage.sent_at == NOW and barrage.colour == "#aabbcc"
    assert len(barrage.id) == 26


def test_submission_keeps_a_client_id_and_time() -> None:
    barrage = parse_submission({"id": "abc-1", "room": "r", "user": "u", "text": "x", "sent_at": NOW - 1}, NOW)
    assert (barrage.id, barrage.sent_at) == ("abc-1", NOW - 1)


def test_color_spelling_is_accepted() -> None:
    assert parse_submission({"room": "r", "user": "u", "text": "x", "color": "#000000"}, NOW).colour == "#000000"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "barrage"),
        ({"user": "u", "text": "x"}, "room"),
        ({"room": "bad room", "user": "u", "text": "x"}, "room"),
        ({"room": "r" * 65, "user": "u", "text": "x"}, "room"),
        ({"room": "r", "user": 7, "text": "x"}, "user"),
        ({"room": "r", "user": "u", "text": "   "}, "text"),
        ({"room": "r", "user": "u", "text": "x" * (MAX_TEXT_LENGTH + 1)}, "text"),
        ({"room": "r", "user": "u", "text": None}, "text"),
        ({"room": "r", "user": "u", "text": "x", "colour": "red"}, "colour"),
        ({"room": "r", "user": "u", "text": "x", "sent_at": "now"}, "sent_at"),
        ({"room": "r", "user": "u", "text": "x", "sent_at": True}, "sent_at"),
        ({"room": "r", "user": "u", "text": "x", "sent_at": 1_700_000_000}, "sent_at"),
        ({"room": "r", "user": "u", "text": "x", "id": "has space"}, "id"),
        ({"room": "r", "user": "u", "text": "x", "extra": 1}, "extra"),
        ({"room": "r", "user": "u", "text": "x", "colour": "#000000", "color": "#000000"}, "colour"),
    ],
)
def test_bad_submissions_name_the_field(data: object, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_submission(data, NOW)
    assert info.value.field == field
    assert info.value.reason


def test_text_limit_counts_after_trimming() -> None:
    text = " " * 10 + "x" * MAX_TEXT_LENGTH + " " * 10
    assert parse_submission({"room": "r", "user": "u", "text": text}, NOW).text == "x" * MAX_TEXT_LENGTH


def test_parse_barrage_requires_id_and_sent_at() -> None:
    good = Barrage("i1", "r", "u", "t", NOW).to_dict()
    assert parse_barrage(good) == Barrage("i1", "r", "u", "t", NOW)
    for missing in ("id", "sent_at"):
        with pytest.raises(ValidationError, match=missing):
            parse_barrage({k: v for k, v in good.items() if k != missing})


def test_processed_barrage_round_trips_through_dict() -> None:
    result = ProcessedBarrage("i", "r", "u", "t", 3, "#ffffff", NOW, NOW + 1, 2, True, ("masked", "truncated"))
    assert ProcessedBarrage.from_dict(result.to_dict()) == result


def reference_ulid(now_ms: int, entropy: bytes) -> str:
    """The ULID spec's digit-by-digit encoding, to check the fast one against."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = (now_ms << 80) | int.from_bytes(entropy, "big")
    return "".join(alphabet[(value >> (5 * (25 - i))) & 31] for i in range(26))


@given(st.integers(min_value=0, max_value=(1 << 48) - 1), st.binary(min_size=10, max_size=10))
def test_new_id_matches_the_ulid_encoding(now_ms: int, entropy: bytes) -> None:
    assert new_id(now_ms, entropy) == reference_ulid(now_ms, entropy)


def test_known_ulid() -> None:
    assert new_id(0, bytes(10)) == "0" * 26
    assert new_id((1 << 48) - 1, b"\xff" * 10) == "7" + "Z" * 25
