"""The result-store contract, shared by every store (memory, SQLite, Tablestore, ...).

``tests/integration/test_store_contract.py`` runs it against each store; a new store adds
a ``StoreCase`` there. A case opens a store; ``open_in_child`` is a picklable opener for
stores that several processes can share (None when the store lives in one process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from handlers.model import ProcessedBarrage, new_id
from handlers.ports import ResultStore

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class StoreCase:
    name: str
    open: Callable[[], ResultStore]
    open_in_child: Callable[[], ResultStore] | None = None


def make_result(room: str = "room-1", i: int = 0, *, sent_at: int | None = None, user: str = "u1") -> ProcessedBarrage:
    stamp = sent_at if sent_at is not None else BASE_MS + i
    return ProcessedBarrage(
        id=new_id(stamp),
        room=room,
        user=user,
        text=f"message {i}",
        lane=i % 8,
        colour="#ff8800",
        sent_at=stamp,
        processed_at=stamp + 5,
    )


def write_in_child(opener: Callable[[], ResultStore], room: str, start: int, count: int, batch: int) -> int:
    """Runs in a child process: store ``count`` results in batches; returns how many were stored."""
    store = opener()
    stored = 0
    for offset in range(0, count, batch):
        results = [make_result(room, start + j) for j in range(offset, min(offset + batch, count))]
        for _attempt in range(50):
            outcomes = store.put_many(results)
            failed = [r for r, o in zip(results, outcomes, strict=True) if o.status.value == "failed"]
            stored += sum(1 for o in outcomes if o.status.value == "stored")
            if not failed:
                break
            results = failed
        else:
            raise RuntimeError("writes kept failing after 50 attempts")
    return stored
