"""CloudEvents over HTTP: an event function as a Knative sink (KafkaSource, the local dispatcher).

Requests are binary mode (``ce-*`` headers, data in the body), structured mode
(``application/cloudevents+json``) or a batch (``application/cloudevents-batch+json``). The answer
is what a KafkaSource acts on (PLATFORM.md §5): 2xx done, 400 never retried (dead letter), 503
retried. A batch answers 503 when any record is to be retried (the whole batch comes again; done
records come back as duplicates) and 200 otherwise, its report listing rejected records for the
sender to dead-letter one by one.

The decoding is written out here rather than taken from the cloudevents SDK's ``from_http``:
that one invents a ``time`` for events without one and re-encodes structured data, and it has
no batch mode; tests/unit/functions/bindings/test_cloudevents_http.py checks the two agree on
every attribute and on the data of valid events.

``containerConcurrency`` (``CONTAINER_CONCURRENCY`` in the instance's environment) is enforced
as Knative's queue-proxy does: that many requests run, ten times as many wait, and beyond that
the answer is 503 at once. The function itself runs on a bounded pool of threads, never on the
loop. For a batch function, single-event requests (KafkaSource's way) that arrive while a call
is running are run together in the next call, as a database's group commit: one store write for
all of them, no added wait when there is no queue (``Combiner``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from functions.asgi import ASGIApp, Message, Receive, Scope, Send, lifespan
from functions.records import (
    BatchReport,
    Delivered,
    OutcomeKind,
    RecordError,
    Undecodable,
    record_from_attributes,
    record_from_structured,
)

if TYPE_CHECKING:
    from functions.app import EventFunction, Invocation
    from functions.records import Outcome

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_BODY_BYTES = 32 * 1024 * 1024  # as FC's Kafka trigger's synchronous limit
MAX_BATCH_EVENTS = 10_000
MAX_COMBINED = 500  # records of one combined call, as the dispatcher's largest batch
QUEUE_FACTOR = 10
SHAPE = "cloudevents-http"


class BadDelivery(ValueError):
    """The request as a whole carries no event (HTTP 400); ``status`` may say 413 or 415."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _media(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise BadDelivery("body is JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadDelivery(f"body is not valid JSON: {exc}") from None


def decode(headers: Mapping[str, str], body: bytes) -> tuple[list[Delivered], bool]:
    """The records of one request (``headers`` lower-cased) and whether it was a batch."""
    if "ce-specversion" in headers:
        attributes = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        if headers.get("content-type"):
            attributes["datacontenttype"] = headers["content-type"]
        try:
            return [record_from_attributes(attributes, body)], False
        except RecordError as exc:
            return [Undecodable(attributes.get("id") or "#0", str(exc))], False
    media = _media(headers)
    if media == STRUCTURED:
        document = _json(body)
        try:
            return [record_from_structured(document)], False
        except RecordError as exc:
            ident = document.get("id") if isinstance(document, dict) else None
            return [Undecodable(str(ident or "#0"), str(exc))], False
    if media == BATCH:
        documents = _json(body)
        if not isinstance(documents, list):
            raise BadDelivery("a CloudEvents batch must be a JSON array")
        if len(documents) > MAX_BATCH_EVENTS:
            raise BadDelivery(f"a batch holds at most {MAX_BATCH_EVENTS} events")
        out: list[Delivered] = []
        for position, document in enumerate(documents):
            try:
                out.append(record_from_structured(document))
            except RecordError as exc:
                ident = document.get("id") if isinstance(document, dict) else None
                out.append(Undecodable(str(ident or f"#{position}"), str(exc)))
        return out, True
    raise BadDelivery(f"not a CloudEvent: expected ce-specversion headers (binary mode) or Content-Type "
                      f"{STRUCTURED} or {BATCH}", 415 if media else 400)


def status_of(report: BatchReport, batch: bool) -> int:
    kinds = {r.outcome.kind for r in report.results}
    if OutcomeKind.RETRY in kinds:
        return 503
    if not batch and OutcomeKind.REJECT in kinds:
        return 400
    return 200


class QueueFull(Exception):
    pass


class ConcurrencyGate:
    """Knative queue-proxy's hard limit: ``limit`` running, ``QUEUE_FACTOR x limit`` waiting, then 503."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("containerConcurrency must be >= 0")
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit) if limit else None
        self._admitted = 0

    async def __aenter__(self) -> None:
        if self._semaphore is None:
            return
        if self._admitted >= self.limit * (1 + QUEUE_FACTOR):
            raise QueueFull(f"pending request queue full ({self.limit * QUEUE_FACTOR} queued, {self.limit} running)")
        self._admitted += 1
        try:
            await self._semaphore.acquire()
        except BaseException:
            self._admitted -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._admitted -= 1


class Combiner:
    """Runs single-record deliveries of a batch function: one call at a time, and every delivery
    that arrived meanwhile (up to ``max_records``) goes into the next call. With no queue a
    delivery runs at once and alone; under load the calls grow and the per-call costs (a store
    transaction, a thread hand-off) are shared."""

    def __init__(self, function: EventFunction[Any], executor: ThreadPoolExecutor,
                 max_records: int = MAX_COMBINED) -> None:
        self._function = function
        self._executor = executor
        self._max = max_records
        self._waiting: list[tuple[Delivered, Invocation[Any], asyncio.Future[Outcome]]] = []
        self._running = False

    async def run(self, item: Delivered, invocation: Invocation[Any]) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, invocation, future))
        if not self._running:
            self._start()
        return await asyncio.shield(future)  # a cancelled request must not cancel the others' call

    def _start(self) -> None:
        taken, self._waiting = self._waiting[:self._max], self._waiting[self._max:]
        self._running = True
        loop = asyncio.get_running_loop()
        try:
            call = loop.run_in_executor(self._executor, self._function.run_combined,
                                        [(item, invocation) for item, invocation, _ in taken])
        except RuntimeError as exc:  # the pool is shut down (the server is stopping): no waiter hangs
            self._running = False
            self._settle(taken, exc, [])
            return
        call.add_done_callback(lambda done: self._finish(taken, done))

    def _finish(self, taken: list[tuple[Delivered, Invocation[Any], asyncio.Future[Outcome]]],
                done: asyncio.Future[list[Outcome]]) -> None:
        self._running = False
        if done.cancelled():
            self._settle(taken, asyncio.CancelledError("the call was cancelled"), [])
        else:
            error = done.exception()
            self._settle(taken, error, done.result() if error is None else [])
        if self._waiting:
            self._start()

    @staticmethod
    def _settle(taken: list[tuple[Delivered, Invocation[Any], asyncio.Future[Outcome]]],
                error: BaseException | None, outcomes: list[Outcome]) -> None:
        for index, (_, _, future) in enumerate(taken):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(outcomes[index])


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadDelivery("the client went away before the body was read", 400)
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise BadDelivery(f"body is larger than {limit} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond_json(send: Send, status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    start: Message = {"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"application/json"),
                                  (b"content-length", str(len(body)).encode()), *headers]}
    await send(start)
    await send({"type": "http.response.body", "body": body})


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "message": message}}


def sink_app(function: EventFunction[Any], *, concurrency: int | None = None,
             max_body_bytes: int = MAX_BODY_BYTES) -> ASGIApp:
    """The ASGI app that receives CloudEvents for ``function`` at ``/`` (and answers ``GET /healthz``)."""
    environ = function.app.instance().environ
    raw = (environ.get("CONTAINER_CONCURRENCY") or "0").strip()
    limit = concurrency if concurrency is not None else (int(raw) if raw.isdigit() else 0)
    gate = ConcurrencyGate(limit)
    # Worker threads for the (blocking) function: the running requests, never more.
    executor = ThreadPoolExecutor(max_workers=limit or 40, thread_name_prefix=f"{function.name}-call")
    combiner = Combiner(function, executor) if function.batch else None

    def shutdown() -> None:
        function.app.reset()
        executor.shutdown(wait=False)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, shutdown)
            return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", "/"), scope.get("method", "GET")
        if path == "/healthz" and method in ("GET", "HEAD"):
            await respond_json(send, 200, {"status": "ok"})
            return
        if path != "/":
            await respond_json(send, 404, error(404, f"no route {path}; deliver CloudEvents to /"))
            return
        if method != "POST":
            await respond_json(send, 405, error(405, "deliver CloudEvents with POST"), [(b"allow", b"POST")])
            return
        headers = {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]}
        try:
            async with gate:
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) > max_body_bytes:
                    raise BadDelivery(f"body is larger than {max_body_bytes} bytes", 413)
                body = await read_body(receive, max_body_bytes)
                delivered, batch = decode(headers, body)
                report = await _call(function, executor, combiner, delivered, batch, headers)
        except QueueFull as exc:
            await respond_json(send, 503, error(503, str(exc)))
            return
        except BadDelivery as exc:
            await respond_json(send, exc.status, error(exc.status, str(exc)))
            return
        status = status_of(report, batch)
        payload = report.to_dict()
        if status >= 400 and not batch:
            payload["error"] = {"status": status, "message": report.results[0].outcome.reason}
        await respond_json(send, status, payload)

    return app


async def _call(function: EventFunction[Any], executor: ThreadPoolExecutor, combiner: Combiner | None,
                delivered: list[Delivered], batch: bool, headers: dict[str, str]) -> BatchReport:
    """The function's report on one request's records, computed off the loop."""
    loop = asyncio.get_running_loop()

    def invocation_() -> Invocation[Any]:
        return function.invocation(SHAPE, headers=headers, batch=batch, request_id=headers.get("ce-id", ""))

    # The first invocation builds the dependencies, which blocks: that one is made in a worker.
    built = function.app.instance().built
    invocation = invocation_() if built else await loop.run_in_executor(executor, invocation_)
    if combiner is not None and not batch:
        outcome = await combiner.run(delivered[0], invocation)
        return BatchReport.of([(delivered[0].id, outcome)])
    context = contextvars.copy_context()
    return await loop.run_in_executor(executor, context.run, function.run, delivered, invocation)
