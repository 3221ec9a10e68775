"""The result store on Alibaba Cloud Tablestore (``tablestore.OTSClient``).

Layout: one table, primary key ``(pk STRING, ts INTEGER, id STRING)``, two kinds of rows.

* Timeline rows, what readers scan: ``pk = md5(room)[:4] + ":r:" + room`` (the hashed prefix
  spreads rooms over partitions; a timestamp never leads the key), ``ts`` = the writer's clock
  when the result was stored, in microseconds plus a per-call sequence so one writer's keys
  are distinct (not ``sent_at``: a barrage stamped long ago but stored now must sort as new),
  ``id`` = barrage id.
* Claim rows, the once-per-id guard: ``pk = md5(id)[:4] + ":i:" + id``, ``ts = 0``, holding the
  room, the timeline ``ts`` and a per-call nonce. A claim is written with EXPECT_NOT_EXIST,
  so a retried or repeated put of an id is a detectable duplicate, whatever its ``ts``.

Writing: claim, then timeline row (EXPECT_NOT_EXIST too). Row-level BatchWriteRow failures
(the SDK does not retry them) are retried with backoff; a request whose outcome is unknown
is retried with the same key, so it cannot duplicate. A timeline row is only attempted
within ``write_deadline_ms`` of its ``ts``; one that is not stored by then is reported FAILED
and its claim released (conditionally on our nonce). A claim without a timeline row that
is older than ``stale_claim_ms`` belonged to a writer that gave up; the next writer of that
id takes it over with a compare-and-swap on the nonce and a fresh ``ts``.

Reading and late rows: a timeline row becomes visible at most ``lateness_bound_ms`` after
its ``ts`` (write deadline + one bounded request + SDK retries). A cursor therefore keeps a
floor ``f`` (every row keyed below it is settled) at ``newest delivered ts - grace_ms`` and
the fingerprints of the rows it delivered at or above ``f``; ``since`` re-reads from ``f``
and delivers every row not fingerprinted, in key order. So a row stored late (keyed before
rows already read) still comes back, once. ``grace_ms`` must exceed ``lateness_bound_ms``
plus the clock skew between writers. Bound: the cursor holds at most ``MAX_SEEN`` rows; past
that it raises ``f`` above the oldest, so a late row is also only guaranteed if fewer than
``MAX_SEEN`` newer rows reached this reader before it became visible. Fingerprints are 48
bits of SHA-256 of the id, so a late row is wrongly taken as seen with probability below
``MAX_SEEN / 2**48`` (about 3e-13).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import tablestore
from tablestore.retry import RetryPolicy, RetryUtil

from handlers import cursor
from handlers.model import ProcessedBarrage
from handlers.ports import Clock, InvalidCursor, Page, PutResult, PutStatus, SystemClock

if TYPE_CHECKING:
    from functions.config import TablestoreConfig

CURSOR_KIND = "tablestore"


class AccessKeyLike(Protocol):
    @property
    def access_key_id(self) -> str: ...

    @property
    def access_key_secret(self) -> str: ...

    @property
    def security_token(self) -> str | None: ...


class KeySource(Protocol):
    """Where the newest short-lived keys are (``functions.lifecycle.CredentialsSource``)."""

    @property
    def version(self) -> int: ...

    def current(self) -> AccessKeyLike | None: ...

PK_SCHEMA = [("pk", "STRING"), ("ts", "INTEGER"), ("id", "STRING")]
MAX_BATCH_ROWS = 200
MAX_BATCH_BYTES = 4 * 1024 * 1024
BATCH_BYTES_BUDGET = 3 * 1024 * 1024  # headroom under 4 MB for PlainBuffer overhead
MAX_RANGE_ROWS = 5000
MAX_SEEN = 72  # keeps every cursor under handlers.cursor.MAX_TOKEN_LENGTH
_FINGERPRINT_BYTES = 6
_STAMP_BYTES = 7  # microsecond stamps need 51 bits
_ENTRY_BYTES = _STAMP_BYTES + _FINGERPRINT_BYTES
_CONDITION_FAILED = "OTSConditionCheckFail"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TablestoreRetry:
    """Retry settings: ours for row-level failures, the SDK's for throttled requests."""

    max_row_attempts: int = 5
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    sdk_max_retries: int = 3
    sdk_delay_base_s: float = 0.05
    sdk_delay_max_s: float = 0.5
    socket_timeout_s: float = 5.0


class BoundedRetryPolicy(RetryPolicy):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's default retry rules with a bounded count and delays, so a call's duration
    has a known ceiling (the late-row bound depends on it)."""

    def __init__(self, max_retries: int, base_delay_s: float, max_delay_s: float) -> None:
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s

    def should_retry(self, retry_times: int, exception: Any, api_name: str) -> bool:
        if retry_times >= self.max_retries:
            return False
        if RetryUtil.should_retry_no_matter_which_api(exception):
            return True
        return bool(RetryUtil.is_repeatable_api(api_name)
                    and RetryUtil.should_retry_when_api_repeatable(retry_times, exception, api_name))

    def get_retry_delay(self, retry_times: int, exception: Any, api_name: str) -> float:
        limit = min(self.max_delay_s, self.base_delay_s * 2**retry_times)
        return float(limit * (0.5 + random.random() / 2))


def room_key(room: str) -> str:
    return f"{hashlib.md5(room.encode()).hexdigest()[:4]}:r:{room}"


def claim_key(barrage_id: str) -> str:
    return f"{hashlib.md5(barrage_id.encode()).hexdigest()[:4]}:i:{barrage_id}"


def _fingerprint(barrage_id: str) -> bytes:
    return hashlib.sha256(barrage_id.encode()).digest()[:_FINGERPRINT_BYTES]


@dataclass
class _Position:
    """What a cursor remembers: the floor key and the delivered rows at or above it."""

    floor: tuple[int, str]
    seen: set[tuple[int, bytes]]

    def encode(self) -> str:
        entries = sorted(self.seen)
        packed = b"".join(ts.to_bytes(_STAMP_BYTES, "big") + fp for ts, fp in entries)
        return cursor.encode(CURSOR_KIND, {"f": [self.floor[0], self.floor[1]],
                                           "s": base64.urlsafe_b64encode(packed).decode()})

    @classmethod
    def decode(cls, token: str) -> _Position:
        position = cursor.decode(CURSOR_KIND, token)
        floor, seen = position.get("f"), position.get("s")
        if (not isinstance(floor, list) or len(floor) != 2 or isinstance(floor[0], bool)
                or not isinstance(floor[0], int) or floor[0] < 0 or not isinstance(floor[1], str)
                or not isinstance(seen, str)):
            raise InvalidCursor("cursor is not a token issued by this service")
        try:
            packed = base64.urlsafe_b64decode(seen.encode())
        except ValueError as exc:
            raise InvalidCursor("cursor is not a token issued by this service") from exc
        if len(packed) % _ENTRY_BYTES or len(packed) // _ENTRY_BYTES > MAX_SEEN:
            raise InvalidCursor("cursor is not a token issued by this service")
        entries = {
            (int.from_bytes(packed[i : i + _STAMP_BYTES], "big"), packed[i + _STAMP_BYTES : i + _ENTRY_BYTES])
            for i in range(0, len(packed), _ENTRY_BYTES)
        }
        return cls((floor[0], floor[1]), entries)


@dataclass
class _Pending:
    index: int
    result: ProcessedBarrage
    ts: int = 0


class TablestoreResultStore:
    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        instance_name: str,
        table_name: str,
        *,
        sts_token: str | None = None,
        ttl_seconds: int = -1,
        max_versions: int = 1,
        retry: TablestoreRetry | None = None,
        write_deadline_ms: int = 5_000,
        grace_ms: int | None = None,
        enable_native: bool = True,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        keys: KeySource | None = None,
    ) -> None:
        self.table_name = table_name
        self.retry = retry or TablestoreRetry()
        self.write_deadline_ms = write_deadline_ms
        request_bound_ms = math.ceil(
            (self.retry.sdk_max_retries + 1) * self.retry.socket_timeout_s * 1000
            + self.retry.sdk_max_retries * self.retry.sdk_delay_max_s * 1000
        )
        self.lateness_bound_ms = write_deadline_ms + request_bound_ms
        # A claim this old has no writer left that could still store its timeline row.
        self.stale_claim_ms = self.lateness_bound_ms + 1_000
        # Default: twice the bound, leaving as much again for clock skew between writers.
        self.grace_ms = grace_ms if grace_ms is not None else 2 * self.lateness_bound_ms
        if self.grace_ms <= self.lateness_bound_ms:
            raise ValueError(f"grace_ms must exceed the lateness bound of {self.lateness_bound_ms} ms")
        self._clock = clock or SystemClock()
        self._sleep = sleep
        sdk_logger = logging.getLogger(f"{__name__}.sdk")
        if sdk_logger.level == logging.NOTSET:
            # The SDK logs expected outcomes (condition failures, a missing table) as errors,
            # and at level NOTSET it renders every request as text for debug logging, which
            # costs more than the request itself. This store reports what matters itself.
            sdk_logger.setLevel(logging.CRITICAL)
        def connect(key_id: str, secret: str, token: str | None) -> Any:
            return tablestore.OTSClient(
                endpoint, key_id, secret, instance_name,
                sts_token=token, enable_native=enable_native,
                socket_timeout=self.retry.socket_timeout_s, logger_name=f"{__name__}.sdk",
                retry_policy=BoundedRetryPolicy(self.retry.sdk_max_retries, self.retry.sdk_delay_base_s,
                                                self.retry.sdk_delay_max_s),
            )

        self._connect = connect
        self._keys = keys
        self._keys_version = keys.version if keys is not None else 0
        self._client_lock = threading.Lock()
        self._client = connect(access_key_id, access_key_secret, sts_token)
        self._ensure_table(ttl_seconds, max_versions)

    @property
    def client(self) -> Any:
        """The SDK client, rebuilt when the function's short-lived keys have changed (FC's STS keys expire)."""
        keys = self._keys
        if keys is not None and keys.version != self._keys_version:
            with self._client_lock:
                key = keys.current()
                if key is not None and keys.version != self._keys_version:
                    self._client = self._connect(key.access_key_id, key.access_key_secret, key.security_token)
                    self._keys_version = keys.version
        return self._client

    def _ensure_table(self, ttl_seconds: int, max_versions: int) -> None:
        try:
            self.client.describe_table(self.table_name)
            return
        except tablestore.OTSServiceError as exc:
            if exc.code != "OTSObjectNotExist":
                raise
        try:
            self.client.create_table(
                tablestore.TableMeta(self.table_name, PK_SCHEMA),
                tablestore.TableOptions(time_to_live=ttl_seconds, max_version=max_versions),
                tablestore.ReservedThroughput(tablestore.CapacityUnit(0, 0)),
            )
        except tablestore.OTSServiceError as exc:
            if exc.code != "OTSObjectAlreadyExist":  # another process created it first
                raise

    # ---- writing -----------------------------------------------------------------------

    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        outcomes: dict[int, PutResult] = {}
        first_of: dict[str, int] = {}
        pending: list[_Pending] = []
        for index, result in enumerate(results):
            if result.id not in first_of:
                first_of[result.id] = index
                pending.append(_Pending(index, result))
        nonce = uuid.uuid4().hex
        owned = self._claim(pending, nonce, outcomes)
        self._write_timeline(owned, nonce, outcomes)
        ordered: list[PutResult] = []
        for index, result in enumerate(results):
            first = first_of[result.id]
            if first == index:
                ordered.append(outcomes[index])
            elif outcomes[first].status is PutStatus.FAILED:
                ordered.append(outcomes[first])  # not stored, so not a duplicate of anything
            else:
                ordered.append(PutResult(result.id, PutStatus.DUPLICATE))
        return ordered

    def _backoff(self, attempt: int) -> None:
        limit = min(self.retry.backoff_max_s, self.retry.backoff_base_s * 2**attempt)
        self._sleep(limit * (0.5 + random.random() / 2))

    def _batch_put(self, rows: list[tuple[list[tuple[str, Any]], list[tuple[str, Any]]]]) -> list[str | None]:
        """One BatchWriteRow of EXPECT_NOT_EXIST puts: per row None (written) or an error code.

        Raises when the request as a whole failed (outcome unknown)."""
        condition = tablestore.Condition(tablestore.RowExistenceExpectation.EXPECT_NOT_EXIST)
        items = [tablestore.PutRowItem(tablestore.Row(pk, attrs), condition) for pk, attrs in rows]
        request = tablestore.BatchWriteRowRequest()
        request.add(tablestore.TableInBatchWriteRowItem(self.table_name, items))
        response = self.client.batch_write_row(request)
        codes: list[str | None] = [None] * len(rows)
        for item in response.get_put_by_table(self.table_name):
            codes[item.index] = None if item.is_ok else str(item.error_code)
        return codes

    @staticmethod
    def _chunks(rows: list[tuple[_Pending, list[tuple[str, Any]], list[tuple[str, Any]]]]
                ) -> list[list[tuple[_Pending, list[tuple[str, Any]], list[tuple[str, Any]]]]]:
        chunks: list[list[tuple[_Pending, list[tuple[str, Any]], list[tuple[str, Any]]]]] = [[]]
        size = 0
        for row in rows:
            row_size = 64 + sum(len(name) + len(str(value).encode()) + 16 for name, value in (*row[1], *row[2]))
            if chunks[-1] and (len(chunks[-1]) >= MAX_BATCH_ROWS or size + row_size > BATCH_BYTES_BUDGET):
                chunks.append([])
                size = 0
            chunks[-1].append(row)
            size += row_size
        return [c for c in chunks if c]

    def _claim(self, pending: list[_Pending], nonce: str, outcomes: dict[int, PutResult]) -> list[_Pending]:
        owned: list[_Pending] = []
        todo = pending
        reason = ""
        for attempt in range(self.retry.max_row_attempts):
            if not todo:
                break
            if attempt:
                self._backoff(attempt - 1)
            stamp = self._clock.now_ms() * 1000
            for offset, item in enumerate(todo):
                item.ts = stamp + offset  # distinct keys per writer keep cursor windows small
            rows = [(item, [("pk", claim_key(item.result.id)), ("ts", 0), ("id", item.result.id)],
                     [("room", item.result.room), ("stored_at", item.ts), ("claim", nonce)]) for item in todo]
            retry: list[_Pending] = []
            for chunk in self._chunks(rows):
                try:
                    codes: list[str | None] = self._batch_put([(pk, attrs) for _, pk, attrs in chunk])
                except (tablestore.OTSServiceError, tablestore.OTSClientError) as exc:
                    # Unknown outcome: retrying is safe, our own claim is recognised by its nonce.
                    reason = f"claim request failed: {exc}"
                    retry.extend(item for item, _, _ in chunk)
                    continue
                for (item, _, _), code in zip(chunk, codes, strict=True):
                    if code is None:
                        owned.append(item)
                    elif code == _CONDITION_FAILED:
                        self._resolve_existing_claim(item, nonce, owned, retry, outcomes)
                    else:
                        reason = f"claim row failed: {code}"
                        retry.append(item)
            todo = retry
        for item in todo:
            outcomes[item.index] = PutResult(item.result.id, PutStatus.FAILED, reason or "claim failed")
        return owned

    def _get_row(self, primary_key: list[tuple[str, Any]]) -> dict[str, Any] | None:
        _, row, _ = self.client.get_row(self.table_name, primary_key, max_version=1)
        if row is None:
            return None
        return {name: value for name, value, *_ in row.attribute_columns}

    def _resolve_existing_claim(
        self, item: _Pending, nonce: str, owned: list[_Pending], retry: list[_Pending],
        outcomes: dict[int, PutResult],
    ) -> None:
        """Someone holds a claim on this id: us (an earlier try), a finished writer, a live
        writer, or one that gave up. Only the last may be taken over."""
        result = item.result
        key = [("pk", claim_key(result.id)), ("ts", 0), ("id", result.id)]
        try:
            claim = self._get_row(key)
            if claim is None:  # released meanwhile: claim again
                retry.append(item)
                return
            if claim.get("claim") == nonce:
                item.ts = int(claim["stored_at"])
                owned.append(item)
                return
            timeline = self._get_row([("pk", room_key(str(claim["room"]))), ("ts", int(claim["stored_at"])),
                                      ("id", result.id)])
            if timeline is not None:
                outcomes[item.index] = PutResult(result.id, PutStatus.DUPLICATE)
                return
            now = self._clock.now_ms() * 1000
            if now - int(claim["stored_at"]) <= self.stale_claim_ms * 1000:
                outcomes[item.index] = PutResult(result.id, PutStatus.FAILED, "another writer is storing this id")
                return
            item.ts = now
            swap = tablestore.Condition(
                tablestore.RowExistenceExpectation.EXPECT_EXIST,
                tablestore.SingleColumnCondition("claim", str(claim["claim"]), tablestore.ComparatorType.EQUAL,
                                             pass_if_missing=False),
            )
            self.client.update_row(self.table_name, tablestore.Row(key, {"PUT": [
                ("room", result.room), ("stored_at", now), ("claim", nonce)]}), swap)
            owned.append(item)
        except tablestore.OTSServiceError as exc:
            outcomes[item.index] = PutResult(result.id, PutStatus.FAILED, f"claim check failed: {exc.code}")
        except tablestore.OTSClientError as exc:
            outcomes[item.index] = PutResult(result.id, PutStatus.FAILED, f"claim check failed: {exc}")

    @staticmethod
    def _timeline_columns(result: ProcessedBarrage) -> list[tuple[str, Any]]:
        # One JSON cell: the SDK encodes every cell in Python, so fewer cells write faster.
        return [("v", json.dumps(result.to_dict(), separators=(",", ":")))]

    def _write_timeline(self, owned: list[_Pending], nonce: str, outcomes: dict[int, PutResult]) -> None:
        todo = owned
        unknown: set[int] = set()  # items whose last attempt may or may not have been applied
        reasons: dict[int, str] = {}
        for attempt in range(self.retry.max_row_attempts):
            if attempt:
                self._backoff(attempt - 1)
            now = self._clock.now_ms() * 1000
            # Past the deadline a row would land later than readers' grace window allows.
            deadline_us = self.write_deadline_ms * 1000
            expired = [i for i in todo if now - i.ts >= deadline_us]
            todo = [i for i in todo if now - i.ts < deadline_us]
            for item in expired:
                reasons.setdefault(item.index, "write deadline passed")
            if not todo:
                todo = expired
                break
            rows = [(item, [("pk", room_key(item.result.room)), ("ts", item.ts), ("id", item.result.id)],
                     self._timeline_columns(item.result)) for item in todo]
            retry: list[_Pending] = []
            for chunk in self._chunks(rows):
                try:
                    codes: list[str | None] = self._batch_put([(pk, attrs) for _, pk, attrs in chunk])
                except (tablestore.OTSServiceError, tablestore.OTSClientError) as exc:
                    for item, _, _ in chunk:
                        unknown.add(item.index)
                        reasons[item.index] = f"store request failed: {exc}"
                        retry.append(item)
                    continue
                for (item, _, _), code in zip(chunk, codes, strict=True):
                    # ConditionCheckFail: the row (only we write this key) is already there.
                    if code is None or code == _CONDITION_FAILED:
                        outcomes[item.index] = PutResult(item.result.id, PutStatus.STORED)
                    else:
                        unknown.discard(item.index)
                        reasons[item.index] = f"store row failed: {code}"
                        retry.append(item)
            todo = retry + expired
        for item in todo:
            if item.index in outcomes:
                continue
            if item.index in unknown and self._timeline_exists(item):
                outcomes[item.index] = PutResult(item.result.id, PutStatus.STORED)
                continue
            self._release(item, nonce)
            outcomes[item.index] = PutResult(item.result.id, PutStatus.FAILED, reasons.get(item.index, "not stored"))

    def _timeline_exists(self, item: _Pending) -> bool:
        try:
            return self._get_row([("pk", room_key(item.result.room)), ("ts", item.ts), ("id", item.result.id)]) \
                is not None
        except (tablestore.OTSServiceError, tablestore.OTSClientError):
            return False

    def _release(self, item: _Pending, nonce: str) -> None:
        """Drop our claim so a retry can store the id at once (else it waits for staleness)."""
        condition = tablestore.Condition(
            tablestore.RowExistenceExpectation.IGNORE,
            tablestore.SingleColumnCondition("claim", nonce, tablestore.ComparatorType.EQUAL, pass_if_missing=False),
        )
        key = [("pk", claim_key(item.result.id)), ("ts", 0), ("id", item.result.id)]
        try:
            self.client.delete_row(self.table_name, tablestore.Row(key), condition)
        except (tablestore.OTSServiceError, tablestore.OTSClientError) as exc:
            logger.warning("could not release claim on %s (it turns stale in %d ms): %s",
                           item.result.id, self.stale_claim_ms, exc)

    # ---- reading -----------------------------------------------------------------------

    def _range(
        self, start: list[tuple[str, Any]], end: list[tuple[str, Any]], direction: str, limit: int | None,
        page_size: int = MAX_RANGE_ROWS,
    ) -> Iterator[Any]:
        """Rows from start towards end, following next_start_primary_key, lazily."""
        page_size = max(1, min(page_size, MAX_RANGE_ROWS))
        while True:
            page_limit = page_size if limit is None else min(limit, page_size)
            _, next_start, rows, _ = self.client.get_range(
                self.table_name, direction, start, end, limit=page_limit, max_version=1)
            yield from rows
            if limit is not None:
                limit -= len(rows)
                if limit <= 0:
                    return
            if next_start is None:
                return
            start = next_start

    @staticmethod
    def _to_result(row: Any) -> tuple[int, ProcessedBarrage]:
        ts = next(value for name, value in row.primary_key if name == "ts")
        data = next(value for name, value, *_ in row.attribute_columns if name == "v")
        return int(ts), ProcessedBarrage.from_dict(json.loads(data))

    def latest(self, room: str, limit: int) -> Page:
        prefix = room_key(room)
        rows = [self._to_result(row) for row in self._range(
            [("pk", prefix), ("ts", tablestore.INF_MAX), ("id", tablestore.INF_MAX)],
            [("pk", prefix), ("ts", tablestore.INF_MIN), ("id", tablestore.INF_MIN)],
            "BACKWARD", max(limit, 1), page_size=max(limit, 1))]
        rows.reverse()
        shown = rows if limit > 0 else []
        if not rows:
            return Page([], _Position((0, ""), set()).encode())
        newest_ts = rows[-1][0]
        oldest_ts, oldest = rows[0]
        # Rows older than the oldest one shown are not "after" this page.
        floor = max((newest_ts - self.grace_ms * 1000, ""), (oldest_ts, oldest.id))
        seen = {(ts, _fingerprint(r.id)) for ts, r in rows if (ts, r.id) >= floor}
        return Page([r for _, r in shown], self._bounded(_Position(floor, seen), None).encode())

    def since(self, room: str, cursor_token: str | None, limit: int) -> Page:
        position = _Position((0, ""), set()) if cursor_token is None else _Position.decode(cursor_token)
        if limit <= 0:
            return Page([], position.encode())
        prefix = room_key(room)
        delivered: list[tuple[int, ProcessedBarrage]] = []
        for row in self._range(
            [("pk", prefix), ("ts", position.floor[0]), ("id", position.floor[1])],
            [("pk", prefix), ("ts", tablestore.INF_MAX), ("id", tablestore.INF_MAX)],
            "FORWARD", None, page_size=limit + len(position.seen),
        ):
            ts, result = self._to_result(row)
            entry = (ts, _fingerprint(result.id))
            if entry in position.seen:
                continue
            delivered.append((ts, result))
            position.seen.add(entry)
            if len(delivered) >= limit:
                break
        newest = max([position.floor[0], *(ts for ts, _ in position.seen)])
        floor = max(position.floor, (newest - self.grace_ms * 1000, ""))
        last = (delivered[-1][0], delivered[-1][1].id) if delivered else None
        moved = _Position(floor, {e for e in position.seen if e[0] >= floor[0]})
        return Page([r for _, r in delivered], self._bounded(moved, last).encode())

    @staticmethod
    def _bounded(position: _Position, last_delivered: tuple[int, str] | None) -> _Position:
        """Keep at most MAX_SEEN fingerprints: forget the oldest and raise the floor past them,
        but never past the last row delivered (rows after it have not been read yet)."""
        if len(position.seen) <= MAX_SEEN:
            return position
        stamps = sorted(ts for ts, _ in position.seen)
        # The lowest stamp that leaves at most MAX_SEEN entries at or above it; keys are
        # distinct per writer, so equal stamps are rare and only the very last can overflow.
        cut = stamps[len(stamps) - MAX_SEEN]
        if stamps.count(cut) > 1 and cut == stamps[len(stamps) - MAX_SEEN - 1]:
            cut += 1
        floor = max(position.floor, (cut, ""))
        if last_delivered is not None:
            floor = min(floor, last_delivered)
        return _Position(floor, {e for e in position.seen if e[0] >= floor[0]})

def store_from_config(config: TablestoreConfig, keys: KeySource | None = None, **options: Any) -> TablestoreResultStore:
    """Build the store from ``functions.config.TablestoreConfig``.

    Long-lived keys in the config (OTS_KEYID/OTS_SECRET) are used as they are. Without them the
    store signs with the function role's short-lived keys from ``keys`` (FC's
    ``context.credentials`` of the latest invocation, or the ``ALIBABA_CLOUD_*`` variables), and
    rebuilds its client whenever they change.
    """
    key_id, secret, token = config.access_key_id, config.access_key_secret, config.security_token
    source = None
    if not key_id and keys is not None and (key := keys.current()) is not None:
        key_id, secret, token, source = key.access_key_id, key.access_key_secret, key.security_token, keys
    if not key_id or not secret:
        raise ValueError("Tablestore needs OTS_KEYID/OTS_SECRET or the function role's keys (FC credentials)")
    return TablestoreResultStore(
        config.endpoint, key_id, secret, config.instance, config.table, sts_token=token,
        ttl_seconds=config.ttl_seconds, max_versions=config.max_versions, keys=source, **options,
    )
