"""The page in real headless Chromium against a real HomePage process."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS, ROOT, PageProbe, Server
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def open_room(page: Any, server: Server, prefix: str) -> str:
    room = f"{prefix}-{uuid.uuid4().hex[:8]}"
    page.goto(f"{server.base_url}/?room={room}")
    # Connected: the page knows its cursor and listens (SSE, or polling as fallback).
    # (wait_for_function would need eval, which the page's CSP rightly forbids.)
    page.wait_for_selector("#transport[data-mode='sse'], #transport[data-mode='polling']")
    return room


def flying(page: Any, text: str) -> Any:
    return page.locator("#stage .barrage:not(.idle)").filter(has_text=text).first


def assert_moves_left(locator: Any) -> None:
    first = locator.bounding_box()
    assert first is not None
    wait_for(lambda: (box := locator.bounding_box()) is not None and box["x"] < first["x"] - 10,
               timeout_s=5, what="the barrage to move left")


def assert_clean(probe: PageProbe) -> None:
    assert probe.dialogs == []
    assert probe.csp_violations == []
    assert probe.page_errors == []


def test_typed_message_flies_across(page: Any, homepage_server: Server, probe: PageProbe) -> None:
    open_room(page, homepage_server, "send")
    assert page.locator("#transport").get_attribute("data-mode") == "sse"
    text = f"hello from the browser {uuid.uuid4().hex[:6]}"
    page.fill("#user", "alice")
    page.fill("#text", text)
    page.click("#send")
    barrage = flying(page, text)
    barrage.wait_for(state="visible")
    assert barrage.text_content() == text
    assert_moves_left(barrage)
    assert page.locator("#send-status").text_content() == "sent"
    wait_for(lambda: int(page.text_content("#c-shown") or 0) >= 1, what="the shown counter")
    assert page.text_content("#c-sent") == "1"
    wait_for(lambda: page.text_content("#c-p50") != "–", what="a latency figure")
    assert_clean(probe)


def test_markup_is_shown_as_text_and_never_runs(page: Any, homepage_server: Server, probe: PageProbe) -> None:
    open_room(page, homepage_server, "xss")
    payload = "<img src=x onerror=alert(1)>"
    page.fill("#user", "mallory")
    page.fill("#text", payload)
    page.click("#send")
    barrage = flying(page, payload)
    barrage.wait_for(state="visible")
    assert barrage.text_content() == payload
    assert barrage.evaluate("el => el.children.length") == 0
    # Give an injected element's onerror time to fire if one had been created.
    page.wait_for_timeout(500)
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert_clean(probe)


def test_load_run_shows_progress_barrages_and_stats(page: Any, homepage_server: Server, probe: PageProbe) -> None:
    open_room(page, homepage_server, "load")
    message = f"load {uuid.uuid4().hex[:6]}"
    page.fill("#load-message", message)
    page.fill("#load-concurrency", "4")
    page.fill("#load-duration", "5")
    page.click("#load-send")
    wait_for(lambda: 0 < page.eval_on_selector("#load-progress", "el => el.value") < 1,
               interval_s=0.05, what="partial progress")
    flying(page, message).wait_for(state="visible")
    page.wait_for_selector("#load-form[data-state='finished']", timeout=20_000)
    assert page.eval_on_selector("#load-progress", "el => el.value") == 1
    sent, accepted = int(page.text_content("#s-sent") or 0), int(page.text_content("#s-accepted") or 0)
    assert sent > 0 and accepted > 0 and accepted <= sent
    assert page.text_content("#s-errors") == "0"
    for cell in ("#s-throughput", "#s-p50", "#s-p95", "#s-p99"):
        assert page.text_content(cell) not in ("", "–")
    assert int(page.text_content("#c-shown") or 0) > 0
    # Counters repaint every 250 ms.
    wait_for(lambda: int(page.text_content("#c-sent") or 0) == accepted, what="sent counter to include the run")
    assert_clean(probe)


def test_polling_when_there_is_no_event_source(page: Any, homepage_server: Server, probe: PageProbe) -> None:
    page.add_init_script("delete window.EventSource")
    room = open_room(page, homepage_server, "poll")
    assert page.locator("#transport").get_attribute("data-mode") == "polling"
    text = f"polled {uuid.uuid4().hex[:6]}"
    status, _ = homepage_server.post_json("/api/barrages", {"room": room, "user": "bob", "text": text})
    assert status == 202
    flying(page, text).wait_for(state="visible")
    assert_clean(probe)


def test_page_polls_from_the_start_where_the_server_does_not_stream(
        page: Any, polling_server: Server, probe: PageProbe) -> None:
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/api/stream" in request.url else None)
    room = open_room(page, polling_server, "nostream")
    assert page.locator("#transport").get_attribute("data-mode") == "polling"
    text = f"polled without sse {uuid.uuid4().hex[:6]}"
    status, _ = polling_server.post_json("/api/barrages", {"room": room, "user": "carol", "text": text})
    assert status == 202
    flying(page, text).wait_for(state="visible")
    assert streams == [], f"the page tried event streams: {streams}"
    assert_clean(probe)


def test_write_docs_screenshot(page: Any, homepage_server: Server, probe: PageProbe) -> None:
    """A busy room fills many lanes at once; the picture goes to artifacts/homepage.png.

    ``BARRAGE_SCREENSHOT=docs/screenshot.png pytest -m e2e -k screenshot`` writes the README's.
    """
    room = open_room(page, homepage_server, "demo")
    texts = [
        # ASCII only: the test machine's Chromium has no CJK or emoji fonts.
        "first!", "666666", "this is so smooth", "hello from Hangzhou", "hahahahaha", "Knative + Function Compute",
        "gg wp", "bullet comments, but serverless", "lane 7 is the best lane", "where is this place?",
        "so many barrages", "again!", "p99 under 50 ms", "can't stop watching", "who else is here?", "nice",
        "ok this is cool", "front row seat", "+1", "the lanes are hypnotic", "scaled to zero and back",
    ]
    stop = threading.Event()

    def chatter() -> None:
        index = 0
        while not stop.is_set():
            batch = [{"room": room, "user": f"viewer{(index + i) % 17}", "text": texts[(index + i) % len(texts)]}
                     for i in range(3)]
            homepage_server.post_json("/api/barrages", batch)
            index += 3
            stop.wait(0.12)

    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    try:
        page.fill("#user", "guest")
        page.fill("#text", "hello, barrage!")
        page.click("#send")
        page.fill("#load-message", "666")
        page.fill("#load-concurrency", "1")
        page.fill("#load-duration", "1")
        page.click("#load-send")
        page.wait_for_selector("#load-form[data-state='finished']", timeout=20_000)
        # Let the load run's burst drift left while the chatter fills the lanes.
        page.wait_for_timeout(5000)
        # Read in one go: elements are recycled while the page runs.
        lanes = set(page.eval_on_selector_all(
            "#stage .barrage:not(.idle)", "els => els.map(el => Math.round(el.getBoundingClientRect().top))"))
        assert len(lanes) >= 6, f"barrages in only {len(lanes)} lanes"
        assert int(page.text_content("#s-accepted") or 0) > 0
        target = Path(os.environ.get("BARRAGE_SCREENSHOT") or ARTIFACTS / "homepage.png")
        target = target if target.is_absolute() else ROOT / target
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
    finally:
        stop.set()
        thread.join(5)
    assert target.stat().st_size > 10_000
    assert_clean(probe)
