from __future__ import annotations

import threading

import pytest

from functions.concurrency import ConcurrencyLimiter, QueueFull


def test_admits_limit_plus_queue_then_refuses() -> None:
    limiter = ConcurrencyLimiter(limit=2, queue_factor=1)
    release = threading.Event()
    entered = threading.Semaphore(0)
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with limiter.slot():
                entered.release()
                release.wait(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert entered.acquire(timeout=5) and entered.acquire(timeout=5)  # two running
    # Two more are queued (admitted, waiting): wait until the limiter counts them.
    for _ in range(500):
        if limiter._admitted == 4:
            break
        threading.Event().wait(0.01)
    assert limiter._admitted == 4
    with pytest.raises(QueueFull, match="pending request queue full"), limiter.slot():
        pass
    release.set()
    for thread in threads:
        thread.join(10)
    assert not errors
    with limiter.slot():  # free again
        pass


def test_zero_means_unlimited() -> None:
    limiter = ConcurrencyLimiter(0)
    with limiter.slot(), limiter.slot(), limiter.slot():
        pass


def test_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError):
        ConcurrencyLimiter(-1)
