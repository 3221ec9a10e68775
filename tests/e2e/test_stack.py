"""The whole local topology, started as ``barrage up`` starts it: end to end and under faults.

Every test ends with each accepted barrage visible exactly once through the fetch API.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.e2e.conftest import Server
from tests.e2e.stack_support import Stack, request_json, start_stack
from tests.integration.local.dispatch_support import header_map
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield running
    finally:
        running.stop()
    assert running.process.returncode is not None


def assert_exactly_once(stack: Stack, room: str, accepted: set[str], timeout_s: float = 120) -> list[str]:
    wait_for(lambda: len(set(stack.visible_ids(room))) >= len(accepted), timeout_s,
             f"{len(accepted)} barrages visible in {room}")
    ids = stack.visible_ids(room)
    counts = Counter(ids)
    assert set(ids) == accepted
    assert max(counts.values()) == 1, [i for i, n in counts.items() if n > 1][:5]
    return ids


def test_2000_posted_concurrently_become_visible_exactly_once(stack: Stack) -> None:
    accepted = stack.post_many("e2e-bulk", 2000, concurrency=8)
    assert len(accepted) == 2000
    assert_exactly_once(stack, "e2e-bulk", accepted)


def sigkill_during_run(stack: Stack, room: str, needles: tuple[str, ...]) -> None:
    result: dict[str, set[str]] = {}
    poster = threading.Thread(target=lambda: result.setdefault("ids", stack.post_many(room, 1500, concurrency=4)))
    poster.start()
    wait_for(lambda: len(stack.visible_ids(room)) >= 200, 60, "the first barrages")
    victims = stack.child_pids(*needles)
    assert victims, f"no process matched {needles}"
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    poster.join(180)
    accepted = result["ids"]
    ids = assert_exactly_once(stack, room, accepted, timeout_s=180)
    print(json.dumps({"room": room, "killed": victims, "accepted": len(accepted), "visible": len(ids)}))
    wait_for(lambda: bool(stack.child_pids(*needles)), 30, "the supervisor to restart it")


def test_processor_killed_mid_stream_loses_nothing(stack: Stack) -> None:
    sigkill_during_run(stack, "e2e-kill-processor", ("--target process", f"--port {stack.ports['processor']}"))
    assert "processor exited" in stack.log()


def test_dispatcher_killed_mid_stream_loses_nothing(stack: Stack) -> None:
    sigkill_during_run(stack, "e2e-kill-dispatcher", ("dispatch", f"127.0.0.1:{stack.ports['broker']}"))
    assert "dispatcher exited" in stack.log()


def test_poison_record_goes_to_the_dlq_and_the_rest_flows(stack: Stack) -> None:
    producer = Producer({"bootstrap.servers": stack.bootstrap})
    producer.produce("barrage-info", key=b"e2e-poison", value=b"\x00 not a barrage",
                     headers=[("origin", b"e2e-poison-test")])
    assert producer.flush(10) == 0
    accepted = stack.post_many("e2e-poison", 300, concurrency=4)
    assert_exactly_once(stack, "e2e-poison", accepted)
    consumer = Consumer({"bootstrap.servers": stack.bootstrap, "group.id": "e2e-dlq-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition("barrage-info.dlq", p, 0) for p in range(3)])
    dead: list[dict[str, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while not dead and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                if message.error():
                    continue
                headers = header_map(message)
                if headers.get("origin") == b"e2e-poison-test":
                    dead.append(headers)
    finally:
        consumer.close()
    assert dead, "the poison record never reached barrage-info.dlq"
    assert dead[0]["knativeerrorcode"] == b"400"
    assert b"not JSON" in base64.b64decode(dead[0]["knativeerrordata"])  # the processor's reply
    assert "knativeerrorreason" not in dead[0]
    print(json.dumps({"accepted": len(accepted), "dead_lettered": len(dead)}))


@pytest.fixture(scope="module")
def tablestore_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("stack-ots"), "--store", "tablestore", "--batch-size", "50")
    try:
        yield running
    finally:
        running.stop()


def test_store_throttling_during_a_run_loses_nothing(tablestore_stack: Stack) -> None:
    faults = f"http://127.0.0.1:{tablestore_stack.ports['tablestore']}/_emulator/faults"
    status, _ = request_json(faults, {"seed": 7, "call_failure_rate": 0.2, "call_failure_apis": ["BatchWriteRow"],
                                      "row_failure_rate": 0.1})
    assert status == 200
    accepted = tablestore_stack.post_many("e2e-throttled", 600, concurrency=4)
    ids = assert_exactly_once(tablestore_stack, "e2e-throttled", accepted, timeout_s=180)
    _, described = request_json(faults)
    print(json.dumps({"accepted": len(accepted), "visible": len(ids), "faults": described}))
    assert described["injected_calls"] > 0


def test_a_busy_port_is_a_clear_error(tmp_path: Path, stack: Stack) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "local.cli", "up", "--data-dir", str(tmp_path), "--port", str(stack.ports["homepage"]),
         "--bus", "memory"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 1
    homepage = next(c for c in stack.record().children if c.name == "homepage")
    assert f"port {stack.ports['homepage']} (for homepage) is already in use by pid" in done.stderr
    assert re.search(rf"already in use by pids? (\d+, )*{homepage.pid}\b", done.stderr), done.stderr


def test_the_page_shows_barrages_end_to_end(stack: Stack, page: Any, probe: Any) -> None:
    """The HomePage issue's browser test, once, against the full stack (Kafka, dispatcher, processor)."""
    from tests.e2e.test_homepage_browser import assert_clean, assert_moves_left, flying, open_room

    open_room(page, Server(stack.url, stack.process, stack.log_path), "stack")
    text = f"through kafka {int(time.time() * 1000) % 100000}"
    page.fill("#user", "alice")
    page.fill("#text", text)
    page.click("#send")
    barrage = flying(page, text)
    barrage.wait_for(state="visible", timeout=20_000)
    assert barrage.text_content() == text
    assert_moves_left(barrage)
    assert_clean(probe)
