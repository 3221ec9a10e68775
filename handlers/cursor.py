"""Opaque cursor tokens shared by every result store.

A token is url-safe base64 of ``version.kind.json.checksum``. The checksum does not make
a token secret (a cursor only names a position); it makes a truncated, garbled or
hand-edited token a clear ``InvalidCursor`` instead of a confusing read position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from handlers.ports import InvalidCursor

_VERSION = "1"
MAX_TOKEN_LENGTH = 2048


def _checksum(kind: str, body: str) -> str:
    return hashlib.sha256(f"barrage-cursor:{kind}:{body}".encode()).hexdigest()[:16]


def encode(kind: str, position: Mapping[str, Any]) -> str:
    body = json.dumps(dict(position), separators=(",", ":"), sort_keys=True)
    raw = f"{_VERSION}.{kind}.{body}.{_checksum(kind, body)}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(kind: str, token: str) -> dict[str, Any]:
    """The position inside ``token``; ``InvalidCursor`` unless this kind of store issued it."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidCursor("cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("cursor is not a token issued by this service") from exc
    version, _, rest = raw.partition(".")
    token_kind, _, rest = rest.partition(".")
    body, _, checksum = rest.rpartition(".")
    if version != _VERSION or not body:
        raise InvalidCursor("cursor is not a token issued by this service")
    if token_kind != kind:
        raise InvalidCursor(f"cursor was issued by a {token_kind!r} store, not {kind!r}")
    if checksum != _checksum(kind, body):
        raise InvalidCursor("cursor has been altered")
    try:
        position = json.loads(body)
    except ValueError as exc:
        raise InvalidCursor("cursor is not a token issued by this service") from exc
    if not isinstance(position, dict):
        raise InvalidCursor("cursor is not a token issued by this service")
    return position
