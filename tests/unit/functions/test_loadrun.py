"""The load runner and the HomePage's run registry, driven by fake timers and publishers."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from functions.adapters.memory import InProcessPublisher, MemoryPublisher, MemoryResultStore
from functions.loadrun import (
    LoadLimits,
    LoadRefused,
    LoadRequest,
    LoadRequestError,
    LoadRun,
    LoadRuns,
    LoadSpec,
    Outcome,
    SendOne,
    parse_load_request,
    percentile,
    publisher_factory,
)
from handlers.model import Barrage
from handlers.process import ProcessConfig


class FakeTimer:
    """Monotonic seconds that move only when a test (or a fake publisher) says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class FixedClock:
    def now_ms(self) -> int:
        return 1_700_000_000_000


class GatedPublisher:
    """Holds every publish until the gate opens (runs stay 'running' as long as a test needs)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.published: list[Barrage] = []
        self._lock = threading.Lock()

    def publish_many(self, barrages: Sequence[Barrage]) -> None:
        self.gate.wait(10)
        with self._lock:
            self.published.extend(barrages)


def request(**overrides: object) -> LoadRequest:
    values: dict[str, Any] = {"message": "666", "concurrency": 2, "duration_s": 30.0, "room": "r1"} | overrides
    return LoadRequest(**values)


def ticking(timer: FakeTimer, seconds: float, outcome: Outcome = Outcome.ACCEPTED) -> SendOne:
    def send_one() -> Outcome:
        timer.advance(seconds)
        return outcome

    return send_one


# -- LoadRun ---------------------------------------------------------------------------


def test_duration_run_is_exact_under_a_fake_timer() -> None:
    timer = FakeTimer()
    run = LoadRun(LoadSpec(1, duration_s=1.0), lambda _i: ticking(timer, 0.010), timer)
    run.start()
    assert run.wait(10)
    stats = run.snapshot()
    assert stats.state == "finished" and stats.finished
    # 10 ms per send, stop at 1 s: sends start at 0, 10, ..., 990 ms (float sums may add one).
    assert stats.sent in (100, 101)
    assert stats.accepted == stats.sent and stats.rejected == 0 and stats.errors == 0
    assert stats.elapsed_s == pytest.approx(stats.sent * 0.010)
    assert stats.throughput == pytest.approx(100.0)
    assert stats.latency.p50_ms == pytest.approx(10.0)
    assert stats.latency.p99_ms == pytest.approx(10.0)
    assert stats.progress == 1.0


def test_count_run_sends_exactly_count_across_threads() -> None:
    calls = []
    factory_threads: dict[int, str] = {}
    lock = threading.Lock()

    def factory(index: int) -> SendOne:
        with lock:
            factory_threads[index] = threading.current_thread().name

        def send_one() -> Outcome:
            with lock:
                calls.append(index)
            return Outcome.ACCEPTED

        return send_one

    run = LoadRun(LoadSpec(16, count=2000), factory)
    run.start()
    assert run.wait(30)
    stats = run.snapshot()
    assert stats.sent == stats.accepted == len(calls) == 2000
    # One sender per worker, each made on its own thread (per-thread connections rely on it).
    assert sorted(factory_threads) == list(range(16))
    assert len(set(factory_threads.values())) == 16


def test_rejections_and_errors_are_counted_and_latency_is_of_accepted_only() -> None:
    timer = FakeTimer()
    sequence = iter([Outcome.ACCEPTED, Outcome.REJECTED, "boom", Outcome.ACCEPTED, Outcome.ERROR])

    def send_one() -> Outcome:
        item = next(sequence)
        timer.advance(0.5 if item is Outcome.ACCEPTED else 0.001)
        if item == "boom":
            raise ConnectionError("connection refused")
        assert isinstance(item, Outcome)
        return item

    run = LoadRun(LoadSpec(1, count=5), lambda _i: send_one, timer)
    run.start()
    assert run.wait(10)
    stats = run.snapshot()
    assert (stats.sent, stats.accepted, stats.rejected, stats.errors) == (5, 2, 1, 2)
    assert stats.last_error == "ConnectionError: connection refused"
    assert stats.latency.p50_ms == pytest.approx(500.0)
    assert stats.to_dict()["latency_ms"] == {"p50": 500.0, "p95": 500.0, "p99": 500.0}


def test_progress_while_running_then_stop() -> None:
    timer = FakeTimer()
    release = threading.Event()

    def send_one() -> Outcome:
        release.wait(10)
        return Outcome.ACCEPTED

    run = LoadRun(LoadSpec(2, duration_s=10.0), lambda _i: send_one, timer)
    run.start()
    timer.advance(2.5)
    stats = run.snapshot()
    assert stats.state == "running" and not run.done
    assert stats.progress == pytest.approx(0.25)
    assert stats.elapsed_s == pytest.approx(2.5)
    assert stats.latency.p50_ms is None and stats.throughput == 0.0
    run.stop()
    release.set()
    assert run.wait(10)
    final = run.snapshot()
    assert final.state == "finished" and final.progress == 1.0
    assert final.sent == 2  # each worker finished its in-flight send, then stopped


def test_factory_failure_finishes_the_run_with_the_reason() -> None:
    def factory(_index: int) -> SendOne:
        raise OSError("no route to host")

    run = LoadRun(LoadSpec(3, duration_s=5.0), factory)
    run.start()
    assert run.wait(10)
    stats = run.snapshot()
    assert stats.finished and stats.sent == 0
    assert stats.last_error == "OSError: no route to host"


def test_latency_samples_stay_bounded() -> None:
    timer = FakeTimer()
    run = LoadRun(LoadSpec(1, count=1000), lambda _i: ticking(timer, 0.002), timer, max_samples=10)
    run.start()
    assert run.wait(10)
    assert len(run._latencies) == 10
    assert run.snapshot().latency.p95_ms == pytest.approx(2.0)


def test_a_run_starts_once() -> None:
    run = LoadRun(LoadSpec(1, count=1), lambda _i: lambda: Outcome.ACCEPTED)
    run.start()
    with pytest.raises(RuntimeError):
        run.start()
    assert run.wait(10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"concurrency": 0, "count": 1}, "concurrency"), ({"concurrency": 1}, "duration or a count"),
     ({"concurrency": 1, "duration_s": 0.0}, "duration"), ({"concurrency": 1, "duration_s": math.inf}, "duration"),
     ({"concurrency": 1, "count": 0}, "count")],
)
def test_load_spec_rejects_nonsense(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSpec(**kwargs)


def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 0.50) == 50.0
    assert percentile(samples, 0.95) == 95.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


# -- requests --------------------------------------------------------------------------


def test_parse_load_request_accepts_and_trims() -> None:
    parsed = parse_load_request({"message": "  hi ", "concurrency": 64, "duration": 60, "room": "r"}, LoadLimits())
    assert parsed == LoadRequest(message="hi", concurrency=64, duration_s=60.0, room="r", user="load")
    fractional = parse_load_request({"message": "x", "concurrency": 1, "duration": 0.5, "room": "r", "user": "u"},
                                    LoadLimits())
    assert fractional.duration_s == 0.5 and fractional.user == "u"


GOOD = {"message": "x", "concurrency": 4, "duration": 5, "room": "r"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"), ("x", "body"),
        (GOOD | {"extra": 1}, "extra"),
        ({k: v for k, v in GOOD.items() if k != "message"}, "message"),
        (GOOD | {"message": "   "}, "message"), (GOOD | {"message": 5}, "message"),
        (GOOD | {"message": "x" * 201}, "message"),
        ({k: v for k, v in GOOD.items() if k != "room"}, "room"), (GOOD | {"room": "a b"}, "room"),
        (GOOD | {"user": ""}, "user"),
        ({k: v for k, v in GOOD.items() if k != "concurrency"}, "concurrency"),
        (GOOD | {"concurrency": True}, "concurrency"), (GOOD | {"concurrency": "4"}, "concurrency"),
        (GOOD | {"concurrency": 4.0}, "concurrency"), (GOOD | {"concurrency": 0}, "concurrency"),
        (GOOD | {"concurrency": 65}, "concurrency"),
        ({k: v for k, v in GOOD.items() if k != "duration"}, "duration"),
        (GOOD | {"duration": False}, "duration"), (GOOD | {"duration": "5"}, "duration"),
        (GOOD | {"duration": 0}, "duration"), (GOOD | {"duration": -1}, "duration"),
        (GOOD | {"duration": 60.01}, "duration"), (GOOD | {"duration": math.nan}, "duration"),
        (GOOD | {"duration": math.inf}, "duration"),
    ],
)
def test_parse_load_request_names_the_bad_field(body: object, field: str) -> None:
    with pytest.raises(LoadRequestError) as caught:
        parse_load_request(body, LoadLimits())
    assert caught.value.field == field


def test_limits_are_configurable() -> None:
    limits = LoadLimits(max_concurrency=2, max_duration_s=1.0)
    with pytest.raises(LoadRequestError, match="between 1 and 2"):
        parse_load_request(GOOD | {"concurrency": 3, "duration": 1}, limits)
    with pytest.raises(LoadRequestError, match="at most 1 seconds"):
        parse_load_request(GOOD | {"concurrency": 1, "duration": 1.5}, limits)


# -- publishing through the port ---------------------------------------------------------


def test_publisher_factory_publishes_through_send() -> None:
    publisher = MemoryPublisher()
    send_one = publisher_factory(publisher, FixedClock(), request(message="hey", user="bot"))(0)
    assert send_one() is Outcome.ACCEPTED
    assert send_one() is Outcome.ACCEPTED
    assert [(b.room, b.user, b.text, b.sent_at) for b in publisher.published] == [
        ("r1", "bot", "hey", 1_700_000_000_000)] * 2
    assert len({b.id for b in publisher.published}) == 2


def test_publisher_failures_are_errors_with_the_reason() -> None:
    publisher = MemoryPublisher(fail_ids=lambda _b: "broker down")
    run = LoadRun(LoadSpec(2, count=10), publisher_factory(publisher, FixedClock(), request()))
    run.start()
    assert run.wait(10)
    stats = run.snapshot()
    assert (stats.sent, stats.accepted, stats.errors) == (10, 0, 10)
    assert stats.last_error is not None and "broker down" in stats.last_error


def test_in_process_run_stores_every_accepted_barrage() -> None:
    store = MemoryResultStore()
    clock = FixedClock()
    publisher = InProcessPublisher(store, clock, ProcessConfig())
    run = LoadRun(LoadSpec(4, count=200), publisher_factory(publisher, clock, request()))
    run.start()
    assert run.wait(30)
    assert run.snapshot().accepted == store.count() == 200


# -- the registry ------------------------------------------------------------------------


@pytest.fixture
def gated() -> GatedPublisher:
    return GatedPublisher()


def registry(publisher: GatedPublisher, timer: FakeTimer, **limits: object) -> LoadRuns:
    return LoadRuns(publisher, FixedClock(), LoadLimits(**limits), timer)  # type: ignore[arg-type]


def test_one_run_per_client_at_a_time(gated: GatedPublisher) -> None:
    runs = registry(gated, FakeTimer())
    first, created = runs.start("10.0.0.1", request())
    assert created == 1_700_000_000_000
    with pytest.raises(LoadRefused) as caught:
        runs.start("10.0.0.1", request())
    assert caught.value.status == 409 and caught.value.details == {"run": first.id}
    other, _ = runs.start("10.0.0.2", request())
    assert runs.active_count() == 2
    assert runs.get(first.id) == (first, request(), 1_700_000_000_000)
    assert runs.get("nope") is None
    gated.gate.set()  # let in-flight publishes finish
    runs.close()
    assert first.done and other.done
    with pytest.raises(LoadRefused) as after_close:
        runs.start("10.0.0.3", request())
    assert after_close.value.status == 503


def test_a_finished_run_frees_the_client(gated: GatedPublisher) -> None:
    timer = FakeTimer()
    gated.gate.set()
    runs = registry(gated, timer)
    run, _ = runs.start("c", request(duration_s=1.0))
    timer.advance(1.0)
    assert run.wait(10)
    second, _ = runs.start("c", request())
    assert second.id != run.id
    runs.close()


def test_active_runs_are_capped(gated: GatedPublisher) -> None:
    runs = registry(gated, FakeTimer(), max_active_runs=2)
    runs.start("a", request())
    runs.start("b", request())
    with pytest.raises(LoadRefused) as caught:
        runs.start("c", request())
    assert caught.value.status == 503 and caught.value.retry_after_s
    gated.gate.set()
    runs.close()


def test_starts_are_rate_limited_per_client_and_refill(gated: GatedPublisher) -> None:
    timer = FakeTimer()
    gated.gate.set()
    runs = registry(gated, timer, starts_per_window=2, window_s=60.0)

    def start_and_finish(client: str) -> None:
        run, _ = runs.start(client, request(duration_s=0.5))
        timer.advance(0.5)
        assert run.wait(10)

    start_and_finish("c")
    start_and_finish("c")
    with pytest.raises(LoadRefused) as caught:
        runs.start("c", request())
    assert caught.value.status == 429
    assert caught.value.retry_after_s == pytest.approx(29.0)  # one token per 30 s; 1 s has passed
    start_and_finish("someone-else")  # buckets are per client
    timer.advance(30.0)
    start_and_finish("c")
    runs.close()


def test_only_the_newest_finished_runs_are_kept(gated: GatedPublisher) -> None:
    timer = FakeTimer()
    gated.gate.set()
    runs = registry(gated, timer, keep_finished=2, starts_per_window=100)
    ids = []
    for index in range(4):
        run, _ = runs.start(f"c{index}", request(duration_s=0.1))
        timer.advance(0.1)
        assert run.wait(10)
        ids.append(run.id)
    runs.start("last", request(duration_s=0.1))  # starting reaps
    assert runs.get(ids[0]) is None and runs.get(ids[1]) is None
    assert runs.get(ids[2]) is not None and runs.get(ids[3]) is not None
    runs.close()
