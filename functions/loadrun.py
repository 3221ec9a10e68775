"""Load runs: N worker threads sending barrages for a duration (or a count), with live stats.

The runner knows nothing about HTTP or Flask. What one "send" is comes from a worker
factory, so the HomePage (publishing through the publisher port) and the ``barrage send``
CLI (posting over HTTP, one connection per worker thread) share the same machinery and
report the same numbers. Time comes from an injectable monotonic ``timer`` so tests can
drive runs deterministically.
"""

from __future__ import annotations

import enum
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers.model import ValidationError, validate_identifier, validate_text
from handlers.ports import Clock, Publisher
from handlers.send import send

Timer = Callable[[], float]

# Samples kept per run for percentiles; beyond this, reservoir sampling keeps a uniform
# sample so memory stays bounded at any rate.
MAX_LATENCY_SAMPLES = 100_000


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # the service said no for good (validation)
    ERROR = "error"  # not confirmed: publish failure, transport error, 5xx


SendOne = Callable[[], Outcome]
# Called once on each worker thread (so per-thread resources such as an HTTP connection
# stay on that thread); returns the function that sends one barrage.
WorkerFactory = Callable[[int], SendOne]


@dataclass(frozen=True)
class LoadSpec:
    concurrency: int
    duration_s: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.duration_s is None and self.count is None:
            raise ValueError("give a duration or a count")
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ValueError("duration must be a positive number of seconds")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")


@dataclass(frozen=True)
class Latency:
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms}


@dataclass(frozen=True)
class LoadStats:
    state: str  # "running" or "finished"
    sent: int
    accepted: int
    rejected: int
    errors: int
    elapsed_s: float
    throughput: float  # accepted per second
    latency: Latency
    progress: float  # 0..1
    last_error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "progress": round(self.progress, 4),
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
            "elapsed": round(self.elapsed_s, 3),
            "throughput": round(self.throughput, 2),
            "latency_ms": self.latency.to_dict(),
            "last_error": self.last_error,
        }


def percentile(sorted_samples: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted samples (None when there are none)."""
    if not sorted_samples:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


class LoadRun:
    """One run. ``start`` spawns the workers; ``snapshot`` is safe from any thread."""

    def __init__(self, spec: LoadSpec, factory: WorkerFactory, timer: Timer = time.monotonic,
                 run_id: str | None = None, max_samples: int = MAX_LATENCY_SAMPLES) -> None:
        self.id = run_id or os.urandom(12).hex()
        self.spec = spec
        self._factory = factory
        self._timer = timer
        self._max_samples = max_samples
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._random = random.Random(self.id)
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._live = 0
        self._tickets = 0  # sends claimed so far (count mode)
        self._sent = self._accepted = self._rejected = self._errors = 0
        self._latencies: list[float] = []
        self._recorded = 0
        self._last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._started_at is not None:
                raise RuntimeError("a load run starts once")
            self._started_at = self._timer()
            self._live = self.spec.concurrency
        for index in range(self.spec.concurrency):
            thread = threading.Thread(target=self._work, args=(index,), name=f"load-{self.id[:8]}-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        """Ask workers to stop after their current send."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # -- workers ---------------------------------------------------------------------

    def _claim(self) -> bool:
        """Whether this worker may send once more (checked before every send)."""
        if self._stop.is_set():
            return False
        with self._lock:
            assert self._started_at is not None
            if self.spec.duration_s is not None and self._timer() - self._started_at >= self.spec.duration_s:
                return False
            if self.spec.count is not None:
                if self._tickets >= self.spec.count:
                    return False
                self._tickets += 1
            return True

    def _work(self, index: int) -> None:
        try:
            send_one = self._factory(index)
            while self._claim():
                begin = self._timer()
                try:
                    outcome = send_one()
                except Exception as exc:  # a worker must count failures, never die silently
                    outcome = Outcome.ERROR
                    error: str | None = f"{type(exc).__name__}: {exc}"
                else:
                    error = None
                self._record(outcome, self._timer() - begin, error)
        except Exception as exc:  # the factory itself failed (cannot connect, ...)
            with self._lock:
                self._last_error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._live -= 1
                if self._live == 0:
                    self._finished_at = self._timer()
                    self._done.set()

    def _record(self, outcome: Outcome, seconds: float, error: str | None) -> None:
        with self._lock:
            self._sent += 1
            if outcome is Outcome.ACCEPTED:
                self._accepted += 1
                # Latency is of confirmed publishes; fast failures would flatter it.
                self._recorded += 1
                if len(self._latencies) < self._max_samples:
                    self._latencies.append(seconds)
                else:
                    slot = self._random.randrange(self._recorded)
                    if slot < self._max_samples:
                        self._latencies[slot] = seconds
            elif outcome is Outcome.REJECTED:
                self._rejected += 1
            else:
                self._errors += 1
            if error is not None:
                self._last_error = error

    # -- reporting -------------------------------------------------------------------

    def snapshot(self) -> LoadStats:
        with self._lock:
            started = self._started_at
            finished = self._finished_at
            samples = list(self._latencies)
            sent, accepted, rejected, errors = self._sent, self._accepted, self._rejected, self._errors
            last_error = self._last_error
            now = self._timer()
        end = finished if finished is not None else now
        elapsed = 0.0 if started is None else max(0.0, end - started)
        if finished is not None:
            progress = 1.0
        elif self.spec.count is not None:
            progress = sent / self.spec.count
        elif self.spec.duration_s is not None:
            progress = elapsed / self.spec.duration_s
        else:  # pragma: no cover - LoadSpec forbids it
            progress = 0.0
        samples.sort()
        latency = Latency(*(_ms(percentile(samples, f)) for f in (0.50, 0.95, 0.99)))
        return LoadStats(
            state="finished" if finished is not None else "running",
            sent=sent,
            accepted=accepted,
            rejected=rejected,
            errors=errors,
            elapsed_s=elapsed,
            throughput=accepted / elapsed if elapsed > 0 else 0.0,
            latency=latency,
            progress=min(1.0, max(0.0, progress)),
            last_error=last_error,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


# ---------------------------------------------------------------------------------------
# Server-side runs: requests, limits, and the registry the HomePage keeps.


@dataclass(frozen=True)
class LoadLimits:
    max_concurrency: int = 64
    max_duration_s: float = 60.0
    # Runs at once across all clients; each holds up to max_concurrency threads.
    max_active_runs: int = 4
    # Starts per client per window (a token bucket refilled continuously).
    starts_per_window: int = 5
    window_s: float = 60.0
    # Finished runs kept for GET /api/load/<id>.
    keep_finished: int = 100


@dataclass(frozen=True)
class LoadRequest:
    message: str
    concurrency: int
    duration_s: float
    room: str
    user: str = "load"


class LoadRequestError(ValueError):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


class LoadRefused(Exception):
    """A valid request that cannot start now; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s
        self.details = details


_LOAD_FIELDS = frozenset({"message", "concurrency", "duration", "room", "user"})


def parse_load_request(data: object, limits: LoadLimits) -> LoadRequest:
    if not isinstance(data, Mapping):
        raise LoadRequestError("body", "must be a JSON object")
    unknown = sorted(str(k) for k in data if k not in _LOAD_FIELDS)
    if unknown:
        raise LoadRequestError(unknown[0], "unknown field")
    try:
        message = validate_text(data.get("message"))
        room = validate_identifier("room", data.get("room"))
        user = validate_identifier("user", data.get("user", "load"))
    except ValidationError as exc:
        raise LoadRequestError("message" if exc.field == "text" else exc.field, exc.reason) from None
    concurrency = data.get("concurrency")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise LoadRequestError("concurrency", "must be an integer")
    if not 1 <= concurrency <= limits.max_concurrency:
        raise LoadRequestError("concurrency", f"must be between 1 and {limits.max_concurrency}")
    duration = data.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise LoadRequestError("duration", "must be a number of seconds")
    if not (0 < duration <= limits.max_duration_s):
        raise LoadRequestError("duration", f"must be more than 0 and at most {limits.max_duration_s:g} seconds")
    return LoadRequest(message=message, concurrency=concurrency, duration_s=float(duration), room=room, user=user)


def publisher_factory(publisher: Publisher, clock: Clock, request: LoadRequest) -> WorkerFactory:
    """Workers that publish one barrage per send through ``handlers.send`` (as POST does)."""
    submission = {"room": request.room, "user": request.user, "text": request.message}

    def factory(_index: int) -> SendOne:
        def send_one() -> Outcome:
            result = send([submission], publisher, clock)
            if result.accepted:
                return Outcome.ACCEPTED
            if result.failed:
                raise RuntimeError(next(iter(result.failed.values())))
            return Outcome.REJECTED

        return send_one

    return factory


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class _Entry:
    run: LoadRun
    client: str
    request: LoadRequest
    created_ms: int


@dataclass
class LoadRuns:
    """The runs of one HomePage process, with the limits that keep them safe."""

    publisher: Publisher
    clock: Clock
    limits: LoadLimits = field(default_factory=LoadLimits)
    timer: Timer = time.monotonic

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _Entry] = {}
        self._finished: deque[str] = deque()
        self._buckets: dict[str, _Bucket] = {}
        self._closed = False

    def start(self, client: str, request: LoadRequest) -> tuple[LoadRun, int]:
        """Start a run for ``client``, or raise ``LoadRefused`` saying why not."""
        with self._lock:
            if self._closed:
                raise LoadRefused(503, "the service is shutting down")
            self._reap()
            active = [e for e in self._runs.values() if not e.run.done]
            mine = next((e for e in active if e.client == client), None)
            if mine is not None:
                raise LoadRefused(409, "a load run of yours is still running; wait for it to finish", run=mine.run.id)
            if len(active) >= self.limits.max_active_runs:
                raise LoadRefused(503, f"{len(active)} load runs are active, the most allowed; try again shortly",
                                  retry_after_s=5.0)
            self._take_token(client)
            run = LoadRun(LoadSpec(request.concurrency, duration_s=request.duration_s),
                          publisher_factory(self.publisher, self.clock, request), self.timer)
            entry = _Entry(run, client, request, self.clock.now_ms())
            self._runs[run.id] = entry
            run.start()
            return run, entry.created_ms

    def _take_token(self, client: str) -> None:
        now = self.timer()
        capacity = float(self.limits.starts_per_window)
        rate = capacity / self.limits.window_s
        bucket = self._buckets.get(client) or _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        self._buckets[client] = bucket
        if bucket.tokens < 1.0:
            wait = (1.0 - bucket.tokens) / rate
            raise LoadRefused(429, f"at most {self.limits.starts_per_window} load runs per "
                                   f"{self.limits.window_s:g} s; retry in {math.ceil(wait)} s", retry_after_s=wait)
        bucket.tokens -= 1.0
        # Forget full buckets so the map stays as small as the set of recent clients.
        for key in [k for k, b in self._buckets.items() if k != client and now - b.updated >= self.limits.window_s]:
            del self._buckets[key]

    def _reap(self) -> None:
        """Remember finished runs in order; forget the oldest beyond ``keep_finished``."""
        for run_id, entry in self._runs.items():
            if entry.run.done and run_id not in self._finished:
                self._finished.append(run_id)
        while len(self._finished) > self.limits.keep_finished:
            self._runs.pop(self._finished.popleft(), None)

    def get(self, run_id: str) -> tuple[LoadRun, LoadRequest, int] | None:
        with self._lock:
            entry = self._runs.get(run_id)
            return None if entry is None else (entry.run, entry.request, entry.created_ms)

    def active_count(self) -> int:
        with self._lock:
            return sum(1 for e in self._runs.values() if not e.run.done)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop every run and wait (bounded) for their workers."""
        with self._lock:
            self._closed = True
            runs = [e.run for e in self._runs.values()]
        for run in runs:
            run.stop()
        deadline = time.monotonic() + timeout_s
        for run in runs:
            run.wait(max(0.0, deadline - time.monotonic()))
