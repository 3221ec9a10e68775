"""Golden event payloads checked into tests/events/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).parent / "events"


def load(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def http_event(name: str) -> tuple[dict[str, str], bytes]:
    """A golden HTTP delivery: its headers and body."""
    data = load(name)
    return dict(data["headers"]), data["body"].encode("utf-8")


def raw(name: str) -> bytes:
    return (EVENTS / name).read_bytes()
