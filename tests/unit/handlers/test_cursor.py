from __future__ import annotations

import base64

import pytest

from handlers import cursor
from handlers.ports import InvalidCursor


def test_round_trip() -> None:
    token = cursor.encode("sqlite", {"seq": 42, "ids": ["a"]})
    assert cursor.decode("sqlite", token) == {"seq": 42, "ids": ["a"]}
    assert "=" not in token


def test_token_of_another_store_is_rejected() -> None:
    with pytest.raises(InvalidCursor, match="issued by a 'memory' store"):
        cursor.decode("sqlite", cursor.encode("memory", {"n": 1}))


def test_edited_token_is_rejected() -> None:
    raw = base64.urlsafe_b64decode(cursor.encode("sqlite", {"seq": 1}) + "==").decode()
    forged = base64.urlsafe_b64encode(raw.replace('"seq":1', '"seq":9').encode()).decode()
    with pytest.raises(InvalidCursor, match="altered"):
        cursor.decode("sqlite", forged)


@pytest.mark.parametrize("token", ["", "%%%", "YWJj", "MS5zcWxpdGUuW10uMDAwMA", "\u00e9"])
def test_garbage_is_rejected(token: str) -> None:
    with pytest.raises(InvalidCursor):
        cursor.decode("sqlite", token)
