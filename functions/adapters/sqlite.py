"""The embedded default result store: one SQLite file in WAL mode.

One row per barrage id (the primary key makes ``put_many`` idempotent). ``seq`` is assigned
inside the write transaction and SQLite serialises writers, so a reader that has seen
``seq = n`` has seen every row below it: a cursor on ``seq`` never skips a row stored
late, whatever its ``sent_at``. Several processes may write the same file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from handlers import cursor
from handlers.model import ProcessedBarrage
from handlers.ports import InvalidCursor, Page, PutResult, PutStatus

CURSOR_KIND = "sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS barrages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    room TEXT NOT NULL,
    user TEXT NOT NULL,
    text TEXT NOT NULL,
    lane INTEGER NOT NULL,
    colour TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    processed_at INTEGER NOT NULL,
    masked_words INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    flags TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS barrages_room_seq ON barrages (room, seq);
DROP INDEX IF EXISTS barrages_room_sent_at;
"""
# (room, sent_at) was indexed once and never read: each index costs every write a page in the WAL.

_COLUMNS = "seq, id, room, user, text, lane, colour, sent_at, processed_at, masked_words, truncated, flags"


_write_locks: dict[str, threading.Lock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(path: str) -> threading.Lock:
    # SQLite resolves writer contention by sleeping in its busy handler (1, 2, 5, 10 ms ...);
    # threads of one process queue on a mutex instead, which hands the lock over at once.
    # Other processes still meet SQLite's own lock and busy timeout.
    key = str(Path(path).resolve())
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.Lock())


class SQLiteResultStore:
    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = _write_lock(self.path)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        connection = self._connection()
        with connection:
            connection.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        # sqlite3 connections must stay on the thread that made them; HTTP servers use threads.
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        if not results:
            return []
        connection = self._connection()
        outcomes: list[PutResult] = []
        with self._write_lock:
            return self._put_locked(connection, results, outcomes)

    def _put_locked(
        self, connection: sqlite3.Connection, results: Sequence[ProcessedBarrage], outcomes: list[PutResult]
    ) -> list[PutResult]:
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for r in results:
                    cursor_ = connection.execute(
                        "INSERT OR IGNORE INTO barrages (id, room, user, text, lane, colour, sent_at,"
                        " processed_at, masked_words, truncated, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (r.id, r.room, r.user, r.text, r.lane, r.colour, r.sent_at, r.processed_at,
                         r.masked_words, int(r.truncated), json.dumps(list(r.flags)) if r.flags else "[]"),
                    )
                    status = PutStatus.STORED if cursor_.rowcount == 1 else PutStatus.DUPLICATE
                    outcomes.append(PutResult(r.id, status))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            # Nothing of this transaction is stored: report every item failed (retryable).
            return [PutResult(r.id, PutStatus.FAILED, f"sqlite: {exc}") for r in results]
        return outcomes

    def latest(self, room: str, limit: int) -> Page:
        connection = self._connection()
        rows = connection.execute(
            f"SELECT {_COLUMNS} FROM barrages WHERE room = ? ORDER BY seq DESC LIMIT ?", (room, max(limit, 0))
        ).fetchall()
        rows.reverse()
        if rows:
            last = rows[-1][0]
        else:
            (last,) = connection.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM barrages WHERE room = ?", (room,)
            ).fetchone()
        return Page([_to_result(row) for row in rows], cursor.encode(CURSOR_KIND, {"seq": last}))

    def since(self, room: str, cursor_token: str | None, limit: int) -> Page:
        after = 0
        if cursor_token is not None:
            seq = cursor.decode(CURSOR_KIND, cursor_token).get("seq")
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                raise InvalidCursor("cursor is not a token issued by this service")
            after = seq
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM barrages WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
            (room, after, max(limit, 0)),
        ).fetchall()
        last = rows[-1][0] if rows else after
        return Page([_to_result(row) for row in rows], cursor.encode(CURSOR_KIND, {"seq": last}))

    def count(self) -> int:
        (n,) = self._connection().execute("SELECT COUNT(*) FROM barrages").fetchone()
        return int(n)

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _to_result(row: tuple[object, ...]) -> ProcessedBarrage:
    _, id_, room, user, text, lane, colour, sent_at, processed_at, masked, truncated, flags = row
    return ProcessedBarrage(
        id=str(id_), room=str(room), user=str(user), text=str(text), lane=int(str(lane)),
        colour=str(colour), sent_at=int(str(sent_at)), processed_at=int(str(processed_at)),
        masked_words=int(str(masked)), truncated=bool(truncated), flags=tuple(json.loads(str(flags))),
    )
