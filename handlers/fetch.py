"""Fetching results for the page: the latest N, or everything since a cursor."""

from __future__ import annotations

from handlers.model import ID_PATTERN
from handlers.ports import InvalidCursor, Page, ResultStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


class FetchError(ValueError):
    """A request that can never be answered as given (maps to HTTP 400)."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


def parse_limit(raw: str | int | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except (TypeError, ValueError):
        raise FetchError("limit", "must be an integer") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise FetchError("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


def check_room(room: object) -> str:
    """The room, if it is a valid identifier; ``FetchError`` (parameter ``room``) otherwise."""
    if not isinstance(room, str) or not ID_PATTERN.fullmatch(room):
        raise FetchError("room", "must match [A-Za-z0-9_-]{1,64}")
    return room


def fetch(store: ResultStore, room: object, cursor: str | None = None, limit: int = DEFAULT_LIMIT) -> Page:
    """Without a cursor: the latest ``limit`` results. With one: what came after it.

    An empty cursor means "from the beginning" (a reader that must see every result).
    """
    checked_room = check_room(room)
    checked_limit = parse_limit(limit)
    if cursor is None:
        return store.latest(checked_room, checked_limit)
    try:
        return store.since(checked_room, cursor or None, checked_limit)
    except InvalidCursor as exc:
        raise FetchError("since", str(exc)) from None
