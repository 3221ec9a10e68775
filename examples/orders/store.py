"""Where totals live: a port, and a SQLite file that applies each order once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Protocol

from examples.orders.model import Order, Totals


class TotalsStore(Protocol):
    def apply(self, order: Order) -> bool:
        """Add the order to its customer's totals; False (nothing changed) when it was applied before."""
        ...

    def totals(self, customer: str) -> Totals: ...

    def close(self) -> None: ...


class SQLiteTotals:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        self._db.execute("CREATE TABLE IF NOT EXISTS applied (order_id TEXT PRIMARY KEY, customer TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS totals (customer TEXT PRIMARY KEY, orders INTEGER NOT NULL,"
                         " total_cents INTEGER NOT NULL)")

    def apply(self, order: Order) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                inserted = self._db.execute("INSERT OR IGNORE INTO applied VALUES (?, ?)",
                                            (order.id, order.customer)).rowcount == 1
                if inserted:
                    self._db.execute(
                        "INSERT INTO totals VALUES (?, 1, ?) ON CONFLICT(customer) DO UPDATE SET "
                        "orders = orders + 1, total_cents = total_cents + excluded.total_cents",
                        (order.customer, order.total_cents))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return inserted

    def totals(self, customer: str) -> Totals:
        with self._lock:
            row = self._db.execute("SELECT orders, total_cents FROM totals WHERE customer = ?", (customer,)).fetchone()
        return Totals(customer, *(row or (0, 0)))

    def close(self) -> None:
        with self._lock:
            self._db.close()
