"""The page in real headless Chromium against a real HomePage process."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from handlers.process import assign_lane
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


def counter(page: Any, name: str) -> int:
    return int(page.text_content(f"#c-{name}") or 0)


def latency_ms(page: Any, cell: str) -> float | None:
    """The page's latency figure back in ms ("–", "9.50 ms", "250 ms", "1.23 s")."""
    found = re.fullmatch(r"([0-9.]+) (ms|s)", page.text_content(cell) or "")
    if found is None:
        return None
    return float(found.group(1)) * (1000.0 if found.group(2) == "s" else 1.0)


def on_stage(page: Any) -> list[dict[str, Any]]:
    """Text and place of every barrage flying now (read in one go: elements are recycled)."""
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        "#stage .barrage:not(.idle)",
        "els => els.map(el => ({text: el.textContent, top: Math.round(el.getBoundingClientRect().top)}))")
    return found


def stored_items(server: Server, room: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"room": room, "since": "", "limit": "500"})
    with urllib.request.urlopen(f"{server.base_url}/api/barrages?{query}", timeout=10) as response:
        items: list[dict[str, Any]] = json.loads(response.read())["items"]
    return items


def test_latency_counts_from_sent_at_to_shown(page: Any, homepage_server: Server, probe: PageProbe) -> None:
    room = open_room(page, homepage_server, "latency")
    # A barrage stamped 1.5 s ago: the counter must count those 1.5 s (it starts at sent_at, not on arrival).
    text = f"stamped earlier {uuid.uuid4().hex[:6]}"
    status, _ = homepage_server.post_json("/api/barrages", {"room": room, "user": "dora", "text": text,
                                                            "sent_at": int(time.time() * 1000) - 1500})
    assert status == 202
    flying(page, text).wait_for(state="visible")
    shown = wait_for(lambda: latency_ms(page, "#c-p50"), what="a latency figure")
    assert shown is not None and 1500 <= shown < 1500 + 10_000
    assert latency_ms(page, "#c-p99") == shown  # one sample
    assert_clean(probe)


def test_barrages_of_one_lane_take_free_lanes_at_once(page: Any, homepage_server: Server, probe: PageProbe) -> None:
    room = open_room(page, homepage_server, "lanes")
    tag = uuid.uuid4().hex[:6]
    # Ids the processor places in one lane (12 lanes by default): waiting for that lane would hold
    # the last of them for five lane-lengths while the other lanes are free.
    ids = [i for i in (f"lane-{tag}-{n}" for n in range(200)) if assign_lane(i, 12) == 0][:6]
    batch = [{"id": i, "room": room, "user": "erin", "text": f"same lane {tag} {n}"} for n, i in enumerate(ids)]
    status, _ = homepage_server.post_json("/api/barrages", batch)
    assert status == 202

    def all_six() -> list[dict[str, Any]] | None:
        now = [b for b in on_stage(page) if tag in b["text"]]
        return now if len(now) == 6 else None

    six = wait_for(all_six, what="all six barrages on the stage")
    assert six is not None
    assert len({b["top"] for b in six}) == 6, six
    assert counter(page, "skipped") == 0
    assert_clean(probe)


def test_a_flood_shows_the_newest_and_skips_what_they_overtook(
        page: Any, homepage_server: Server, probe: PageProbe) -> None:
    room = open_room(page, homepage_server, "flood")
    tag = uuid.uuid4().hex[:6]
    flood = [{"room": room, "user": "frank", "text": f"flood {tag} {n}"} for n in range(200)]
    status, _ = homepage_server.post_json("/api/barrages", flood)
    assert status == 202
    wait_for(lambda: counter(page, "received") == 200 and counter(page, "shown") + counter(page, "skipped") == 200,
             what="every barrage of the flood shown or skipped")
    shown = counter(page, "shown")
    # Far more than the stage has room for at once: it shows the newest, not a backlog of old ones
    # that would be later and later.
    assert 0 < shown < 200
    in_order = stored_items(homepage_server, room)  # the order the stream delivered them in
    assert len(in_order) == 200
    newest = {item["text"] for item in in_order[-shown:]}
    assert {b["text"] for b in on_stage(page) if tag in b["text"]} == newest
    assert counter(page, "skipped") == 200 - shown
    assert_clean(probe)


def test_a_stream_of_short_barrages_fills_the_lanes_not_a_fixed_pool(
        page: Any, homepage_server: Server, probe: PageProbe) -> None:
    # Short texts leave room in their lane quickly: 12 lanes hold about 19 "666"s each while they
    # cross (7 s). A pool of elements smaller than that (160 once) ran out first, and a new barrage
    # then waited seconds for one to finish crossing although lanes had room.
    room = open_room(page, homepage_server, "short")
    started = time.monotonic()
    sent = most_flying = 0
    while time.monotonic() - started < 6.5:
        wave = [{"room": room, "user": "gina", "text": str((sent + n) % 10)} for n in range(20)]
        status, _ = homepage_server.post_json("/api/barrages", wave)
        assert status == 202
        sent += len(wave)
        most_flying = max(most_flying, len(on_stage(page)))
        time.sleep(0.1)
    # Each of the 12 lanes takes a one-digit text about every 0.25 s; none finishes crossing before 7 s.
    assert 160 < most_flying <= 12 * 30, f"at most {most_flying} barrages on the stage at once (30 fit a lane)"
    wait_for(lambda: counter(page, "shown") + counter(page, "skipped") == sent, what="every barrage shown or skipped")
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
