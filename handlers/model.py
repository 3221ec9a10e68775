"""The domain model: a barrage as sent, and a barrage as processed.

Validation lives here so every entry point (HTTP, Kafka, FC events) rejects the same
inputs with the same reasons.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
COLOUR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")
MAX_TEXT_LENGTH = 200
MAX_BATCH_SIZE = 500
# Timestamps before 2000 or after 2100 are certainly bugs (seconds instead of ms, etc.).
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_TIMESTAMP_MS = 4_102_444_800_000

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD)


class ValidationError(ValueError):
    """An input that can never become a valid barrage; ``field`` names the culprit."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def new_id(now_ms: int, random_bytes: bytes | None = None) -> str:
    """A 26-character ULID: 48-bit millisecond time then 80 random bits, Crockford base32.

    Lexicographic order follows creation time, which keeps ids sortable in every store.
    """
    entropy = random_bytes if random_bytes is not None else os.urandom(10)
    if len(entropy) != 10:
        raise ValueError("a ULID needs exactly 10 random bytes")
    if not 0 <= now_ms < 1 << 48:
        raise ValueError("time out of ULID range")
    value = (now_ms << 80) | int.from_bytes(entropy, "big")
    # 26 base32 digits hold 130 bits: the 128-bit value behind two zero bits. Left-aligned in
    # 17 bytes, the C base32 encoder yields those digits first (a Python digit loop was a
    # fifth of the HomePage's accept path); the alphabet is then mapped to Crockford's.
    return base64.b32encode((value << 6).to_bytes(17, "big"))[:26].decode("ascii").translate(_TO_CROCKFORD)


@dataclass(frozen=True, slots=True)
class Barrage:
    """A barrage as a person sent it (validated, not yet cleaned)."""

    id: str
    room: str
    user: str
    text: str
    sent_at: int
    colour: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ProcessedBarrage:
    """A barrage after processing: what the page shows and what the store keeps."""

    id: str
    room: str
    user: str
    text: str
    lane: int
    colour: str
    sent_at: int
    processed_at: int
    masked_words: int = 0
    truncated: bool = False
    flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = list(self.flags)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessedBarrage:
        """Rebuild from ``to_dict`` output (stores use this; input is trusted)."""
        return cls(
            id=str(data["id"]),
            room=str(data["room"]),
            user=str(data["user"]),
            text=str(data["text"]),
            lane=int(data["lane"]),
            colour=str(data["colour"]),
            sent_at=int(data["sent_at"]),
            processed_at=int(data["processed_at"]),
            masked_words=int(data.get("masked_words", 0)),
            truncated=bool(data.get("truncated", False)),
            flags=tuple(str(f) for f in data.get("flags", ())),
        )


def validate_identifier(field_name: str, value: object) -> str:
    if value is None:
        raise ValidationError(field_name, "is required")
    if not isinstance(value, str):
        raise ValidationError(field_name, "must be a string")
    if not ID_PATTERN.fullmatch(value):
        raise ValidationError(field_name, "must match [A-Za-z0-9_-]{1,64}")
    return value


def validate_text(value: object) -> str:
    if value is None:
        raise ValidationError("text", "is required")
    if not isinstance(value, str):
        raise ValidationError("text", "must be a string")
    trimmed = value.strip()
    if not trimmed:
        raise ValidationError("text", "must not be empty")
    if len(trimmed) > MAX_TEXT_LENGTH:
        raise ValidationError("text", f"must be at most {MAX_TEXT_LENGTH} characters after trimming")
    return trimmed


def validate_colour(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not COLOUR_PATTERN.fullmatch(value):
        raise ValidationError("colour", "must be #rrggbb")
    return value.lower()


def validate_timestamp(field_name: str, value: object) -> int:
    # bool is an int in Python; a JSON true is never a timestamp.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field_name, "must be an integer (milliseconds since the epoch)")
    if not MIN_TIMESTAMP_MS <= value <= MAX_TIMESTAMP_MS:
        raise ValidationError(field_name, "must be milliseconds since the epoch between 2000 and 2100")
    return value


_SUBMISSION_FIELDS = frozenset({"id", "room", "user", "text", "colour", "color", "sent_at"})


def parse_submission(data: object, now_ms: int) -> Barrage:
    """Validate what a client posted; stamp ``sent_at`` and ``id`` when absent."""
    if not isinstance(data, Mapping):
        raise ValidationError("barrage", "must be a JSON object")
    unknown = sorted(str(k) for k in data if k not in _SUBMISSION_FIELDS)
    if unknown:
        raise ValidationError(unknown[0], "unknown field")
    if "color" in data and "colour" in data:
        raise ValidationError("colour", "give colour or color, not both")
    sent_at = validate_timestamp("sent_at", data["sent_at"]) if "sent_at" in data else now_ms
    raw_id = data.get("id")
    return Barrage(
        id=validate_identifier("id", raw_id) if raw_id is not None else new_id(now_ms),
        room=validate_identifier("room", data.get("room")),
        user=validate_identifier("user", data.get("user")),
        text=validate_text(data.get("text")),
        sent_at=sent_at,
        colour=validate_colour(data.get("colour", data.get("color"))),
    )


def parse_barrage(data: object) -> Barrage:
    """Validate a barrage that already went through ``send`` (as carried by an event)."""
    if not isinstance(data, Mapping):
        raise ValidationError("barrage", "must be a JSON object")
    if "id" not in data:
        raise ValidationError("id", "is required")
    if "sent_at" not in data:
        raise ValidationError("sent_at", "is required")
    return Barrage(
        id=validate_identifier("id", data.get("id")),
        room=validate_identifier("room", data.get("room")),
        user=validate_identifier("user", data.get("user")),
        text=validate_text(data.get("text")),
        sent_at=validate_timestamp("sent_at", data.get("sent_at")),
        colour=validate_colour(data.get("colour")),
    )
