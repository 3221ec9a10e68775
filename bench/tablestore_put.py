"""put_many throughput: TablestoreResultStore through the emulator vs SQLiteResultStore.

Run: .venv/bin/python bench/tablestore_put.py [--count N] [--batch B]
Both stores get the same results in the same batches in one run; prints rows/s and the ratio.
The Tablestore figure includes the SDK's pure-Python request encoding and two BatchWriteRow
round trips per batch (claims, then timeline rows) over loopback HTTP.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from functions.adapters.sqlite import SQLiteResultStore
from functions.adapters.tablestore import TablestoreResultStore
from handlers.ports import PutStatus, ResultStore
from local.tablestore import TablestoreEmulator
from tests.store_contract import make_result


def measure(store: ResultStore, count: int, batch: int, room: str) -> float:
    results = [make_result(room, i) for i in range(count)]
    started = time.perf_counter()
    for offset in range(0, count, batch):
        outcomes = store.put_many(results[offset : offset + batch])
        if any(o.status is not PutStatus.STORED for o in outcomes):
            raise RuntimeError("benchmark write was not stored")
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, TablestoreEmulator() as emulator:
        sqlite = SQLiteResultStore(Path(tmp) / "bench.db")
        tablestore = TablestoreResultStore(emulator.endpoint, emulator.access_key_id, emulator.access_key_secret,
                                           emulator.instance, "bench")
        measure(sqlite, 200, args.batch, "warmup")
        measure(tablestore, 200, args.batch, "warmup")
        sqlite_rate = measure(sqlite, args.count, args.batch, "bench")
        tablestore_rate = measure(tablestore, args.count, args.batch, "bench")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}")
    print(f"rows: {args.count} in batches of {args.batch}")
    print(f"sqlite (WAL file):               {sqlite_rate:10.0f} rows/s")
    print(f"tablestore (SDK -> emulator):    {tablestore_rate:10.0f} rows/s")
    print(f"ratio tablestore/sqlite:         {tablestore_rate / sqlite_rate:10.3f}")


if __name__ == "__main__":
    main()
