"""``barrage send``: post barrages to a HomePage from N threads, then print a summary.

Each worker thread keeps its own ``http.client`` connection (keep-alive), so the numbers
measure the service rather than connection setup. The stdlib is the only HTTP client, so the
CLI stays light. The run machinery (threads, counters, percentiles) is ``functions.loadrun``'s,
shared with the HomePage's server-side load runs.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click

from functions.loadrun import LoadRun, LoadSpec, LoadStats, Outcome, SendOne, WorkerFactory
from handlers.model import MAX_TEXT_LENGTH, ValidationError, validate_identifier, validate_text

MAX_CONCURRENCY = 256
REQUEST_TIMEOUT_S = 10.0


class OneLineUsageError(click.UsageError):
    """Bad arguments: exit code 2 and one line on stderr (not click's usage block)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"barrage send: {self.format_message()}", err=True)


class OneLineCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if isinstance(exc, OneLineUsageError):
                raise
            raise OneLineUsageError(exc.format_message(), ctx) from None


def usage(message: str) -> NoReturn:
    raise OneLineUsageError(message)


class Target:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            usage(f"--url must be an http(s) URL, got {url!r}")
        try:
            self.port = parts.port
        except ValueError:
            usage(f"--url has a bad port: {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.path = parts.path.rstrip("/") + "/api/barrages"

    def connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=REQUEST_TIMEOUT_S)


def http_factory(target: Target, room: str, user: str, message: str) -> WorkerFactory:
    body = json.dumps({"room": room, "user": user, "text": message}).encode()
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}

    def factory(_index: int) -> SendOne:
        # Made on the worker's own thread; http.client connections are not thread-safe.
        state: dict[str, http.client.HTTPConnection] = {"conn": target.connection()}

        def send_one() -> Outcome:
            try:
                state["conn"].request("POST", target.path, body=body, headers=headers)
                response = state["conn"].getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                state["conn"].close()  # reconnect on the next send
                state["conn"] = target.connection()
                raise
            if response.status == 202:
                return Outcome.ACCEPTED
            if 400 <= response.status < 500 and response.status not in (408, 429):
                return Outcome.REJECTED
            raise RuntimeError(f"HTTP {response.status}: {_error_message(payload)}")

        return send_one

    return factory


def _error_message(payload: bytes) -> str:
    try:
        return str(json.loads(payload)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return payload[:200].decode("utf-8", "replace")


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def summary_table(stats: LoadStats) -> str:
    rows = [
        ("sent", str(stats.sent)),
        ("accepted", str(stats.accepted)),
        ("rejected", str(stats.rejected)),
        ("errors", str(stats.errors)),
        ("elapsed", f"{stats.elapsed_s:.2f} s"),
        ("throughput", f"{stats.throughput:.1f} /s"),
        ("latency p50", _fmt_ms(stats.latency.p50_ms)),
        ("latency p95", _fmt_ms(stats.latency.p95_ms)),
        ("latency p99", _fmt_ms(stats.latency.p99_ms)),
    ]
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    line = f"+-{'-' * width}-+-{'-' * value_width}-+"
    body = [f"| {name:<{width}} | {value:>{value_width}} |" for name, value in rows]
    return "\n".join([line, *body, line])


@click.command(cls=OneLineCommand)
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The HomePage's base URL.")
@click.option("--room", default="lobby", show_default=True)
@click.option("--user", default="cli", show_default=True)
@click.option("--message", default="666", show_default=True, help=f"Text, at most {MAX_TEXT_LENGTH} characters.")
@click.option("--concurrency", default=4, show_default=True, type=int, help="Worker threads (connections).")
@click.option("--duration", type=float, default=None, help="Seconds to run (default 10 unless --count).")
@click.option("--count", type=int, default=None, help="Send exactly this many instead of running for a time.")
def send(url: str, room: str, user: str, message: str, concurrency: int, duration: float | None,
         count: int | None) -> None:
    """Send barrages to a HomePage under load and summarise throughput and latency."""
    try:
        room = validate_identifier("room", room)
        user = validate_identifier("user", user)
        message = validate_text(message)
    except ValidationError as exc:
        usage(f"--{'message' if exc.field == 'text' else exc.field}: {exc.reason}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        usage(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    if duration is not None and count is not None:
        usage("give --duration or --count, not both")
    if count is not None and count < 1:
        usage("--count must be at least 1")
    if duration is not None and not (0 < duration <= 3600):
        usage("--duration must be more than 0 and at most 3600 seconds")
    if duration is None and count is None:
        duration = 10.0
    target = Target(url)

    run = LoadRun(LoadSpec(concurrency, duration_s=duration, count=count), http_factory(target, room, user, message))
    run.start()
    interrupted = _show_progress(run)
    stats = run.snapshot()
    click.echo(summary_table(stats))
    if stats.last_error:
        click.echo(f"last error: {stats.last_error}", err=True)
    if interrupted:
        sys.exit(130)
    if stats.accepted == 0:
        sys.exit(1)


def _show_progress(run: LoadRun) -> bool:
    """A progress bar (or plain lines when not a terminal) until the run ends; True if Ctrl-C."""
    steps = 1000
    shown = 0
    stop_reason = threading.Event()
    try:
        bar: Any
        with click.progressbar(length=steps, label="sending", file=sys.stderr, show_eta=False,
                               item_show_func=lambda _s: _status(run)) as bar:
            while not run.wait(0.2):
                progress = int(run.snapshot().progress * steps)
                bar.update(max(0, progress - shown), current_item=1)
                shown = max(shown, progress)
            bar.update(steps - shown, current_item=1)
    except KeyboardInterrupt:
        stop_reason.set()
        run.stop()
        run.wait(REQUEST_TIMEOUT_S + 1)
    return stop_reason.is_set()


def _status(run: LoadRun) -> str:
    stats = run.snapshot()
    return f"sent {stats.sent}  ok {stats.accepted}  err {stats.errors}  {stats.throughput:.0f}/s"


if __name__ == "__main__":  # pragma: no cover
    send()
