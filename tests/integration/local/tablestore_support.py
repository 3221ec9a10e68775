"""A shared in-process Tablestore emulator and fast-retry store openers for tests."""

from __future__ import annotations

import atexit
import functools
import threading
import uuid
from typing import Any

from functions.adapters.tablestore import TablestoreResultStore, TablestoreRetry
from local.tablestore import TablestoreEmulator

# Short SDK and row-retry delays keep fault-injection tests fast; a 1 s socket timeout keeps
# the late-row bound (and so the grace window) small.
FAST_RETRY = TablestoreRetry(
    max_row_attempts=8, backoff_base_s=0.001, backoff_max_s=0.01,
    sdk_max_retries=10, sdk_delay_base_s=0.001, sdk_delay_max_s=0.005, socket_timeout_s=2.0,
)

_lock = threading.Lock()
_shared: TablestoreEmulator | None = None


def shared_emulator() -> TablestoreEmulator:
    """One emulator for the whole test process (tables are per test, so tests stay apart)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = TablestoreEmulator().start()
            atexit.register(_shared.stop)
        return _shared


def unique_table() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def store_opener(emulator: TablestoreEmulator, table: str | None = None, **options: Any
                 ) -> functools.partial[TablestoreResultStore]:
    """A picklable opener (a partial of the constructor) for one table on ``emulator``."""
    kwargs: dict[str, Any] = {"retry": FAST_RETRY, **options}
    return functools.partial(
        TablestoreResultStore, emulator.endpoint, emulator.access_key_id, emulator.access_key_secret,
        emulator.instance, table or unique_table(), **kwargs,
    )
