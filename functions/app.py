"""The public layer: declare an app's functions once, run them on every platform.

An ``App`` holds the functions of one deployable app and the factory of their dependencies
(clients, stores), built once per process from an injected environment mapping::

    from functions.app import App, Record, Invocation, ok, reject

    app = App("orders", module=__name__, dependencies=build_clients)

    @app.event("tally")
    def tally(record: Record, invocation: Invocation[Clients]) -> Outcome: ...

    intake = app.http("intake", lambda clients: make_asgi_app(clients))
    initializer = app.initializer

``tally`` is then, unchanged: the FC handler ``module.tally(event, context)`` (Kafka trigger through
EventBridge, a single CloudEvent, a direct invocation); ``tally.target``, a functions-framework
``--asgi`` target that takes CloudEvents over HTTP as a Knative sink does (binary, structured,
batch; 2xx / 400 / 503); and ``functions.bindings.custom_container.container_app(tally)``, the
FC custom-container / custom-runtime server. ``intake`` (an ASGI app) is likewise the FC handler
for FC 3.0 HTTP events, API Gateway events and FC 2.0 WSGI, ``intake.target`` for
functions-framework, and the same custom-container server.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from functions.asgi import ASGIApp, HttpRequest, HttpResponse, LoopThread, call
from functions.bindings import EventShape, HttpShape, InvalidInvocation, RequestRefused, parse_payload, pick
from functions.lifecycle import AccessKey, CredentialsSource, Factory, Instance
from functions.records import (
    BatchReport,
    Delivered,
    Outcome,
    OutcomeKind,
    Record,
    RecordError,
    Reject,
    Undecodable,
    check_outcomes,
    duplicate,
    ok,
    reject,
    retry,
)

if TYPE_CHECKING:
    from functions.bindings.fc_event import RetryBatch
    from functions.declaration import (
        Deployment,
        Env,
        Function,
        HttpTrigger,
        KafkaTrigger,
        Resources,
        Scaling,
        SecretRef,
    )
    from functions.kafka import KafkaSettings, PublishFailed, RecordPublisher, settings_from_environ

    DEFAULT_HTTP_SHAPES: tuple[type[HttpShape], ...]
    DEFAULT_EVENT_SHAPES: tuple[type[EventShape], ...]

__all__ = [
    "DEFAULT_EVENT_SHAPES",
    "DEFAULT_HTTP_SHAPES",
    "AccessKey",
    "App",
    "AppFunction",
    "BatchReport",
    "CredentialsSource",
    "Deployment",
    "Env",
    "EventFunction",
    "Function",
    "HttpFunction",
    "HttpTrigger",
    "InvalidInvocation",
    "Invocation",
    "KafkaSettings",
    "KafkaTrigger",
    "Outcome",
    "OutcomeKind",
    "PublishFailed",
    "Record",
    "RecordError",
    "RecordPublisher",
    "Reject",
    "Resources",
    "RetryBatch",
    "Scaling",
    "SecretRef",
    "duplicate",
    "ok",
    "reject",
    "retry",
    "settings_from_environ",
]

# Public names whose modules load on first use: every cold start imports this module, and none of
# them serves a request there. The deployment declaration is read by ``barrage render`` only, the
# Kafka publisher by an app that publishes (from its dependencies, built after start-up), and
# each function's invocation shapes when an invocation of that kind first arrives (an HTTP
# function never needs the event shapes, nor a custom-container server the HTTP ones).
_LAZY = {
    **dict.fromkeys(("Deployment", "Env", "Function", "HttpTrigger", "KafkaTrigger", "Resources", "Scaling",
                     "SecretRef"), "functions.declaration"),
    **dict.fromkeys(("KafkaSettings", "PublishFailed", "RecordPublisher", "settings_from_environ"), "functions.kafka"),
    "RetryBatch": "functions.bindings.fc_event",
}


def default_http_shapes() -> tuple[type[HttpShape], ...]:
    """FC 2.0 WSGI, FC 3.0 HTTP events, API Gateway events, tried in this order."""
    from functions.bindings.api_gateway import ApiGatewayEvent
    from functions.bindings.fc2_wsgi import Fc2Wsgi
    from functions.bindings.fc3_http import FC3HttpEvent

    return (Fc2Wsgi, FC3HttpEvent, ApiGatewayEvent)


def default_event_shapes() -> tuple[type[EventShape], ...]:
    """EventBridge batches (the FC Kafka trigger), a single CloudEvent, a direct invocation."""
    from functions.bindings.direct import CloudEventInvocation, DirectInvocation
    from functions.bindings.fc_event import EventBridgeBatch

    return (EventBridgeBatch, CloudEventInvocation, DirectInvocation)


if not TYPE_CHECKING:  # hidden from mypy, so that a misspelt name is still an error there

    def __getattr__(name: str) -> Any:
        if name == "DEFAULT_HTTP_SHAPES":
            value: Any = default_http_shapes()
        elif name == "DEFAULT_EVENT_SHAPES":
            value = default_event_shapes()
        elif name in _LAZY:
            value = getattr(importlib.import_module(_LAZY[name]), name)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value


log = logging.getLogger("functions.app")

D = TypeVar("D")


@dataclass(frozen=True)
class Invocation(Generic[D]):
    """What a function knows about the call it is serving, besides its input."""

    deps: D
    function: str
    shape: str  # the invocation shape that carried it (fc-eventbridge, cloudevents-http, ...)
    request_id: str = ""
    context: Any = None  # the platform's own context object, when there is one (FC's)
    # Delivery-level headers (e.g. the HTTP traceparent of a single binary CloudEvent).
    headers: Mapping[str, str] | None = None
    batch: bool = False
    credentials: CredentialsSource | None = None
    # When one call serves several deliveries of one record each (requests the sink ran together),
    # each record's own delivery headers, in order; ``headers`` is then None.
    record_headers: Sequence[Mapping[str, str]] | None = None

    def delivery_headers(self, index: int) -> Mapping[str, str]:
        """The headers of the delivery that carried record ``index``."""
        if self.record_headers is not None:
            return self.record_headers[index]
        return self.headers or {}

    @property
    def one_record_per_delivery(self) -> bool:
        """Each record came alone in its delivery, so the delivery's headers speak for it."""
        return self.record_headers is not None or not self.batch


RecordHandler = Callable[[Record, Invocation[Any]], Outcome | None]
BatchHandler = Callable[[Sequence[Record], Invocation[Any]], Sequence[Outcome]]


class EventFunction(Generic[D]):
    """An event function: records in, one ``Outcome`` per record out."""

    kind = "event"

    def __init__(self, app: App[D], name: str, handler: RecordHandler | BatchHandler, *, batch: bool,
                 shapes: Sequence[type[EventShape]] | None = None) -> None:
        self.app = app
        self.name = name
        self.handler = handler
        self.batch = batch
        self._shapes = None if shapes is None else tuple(shapes)
        self.__name__ = name  # functions-framework and FC look functions up by attribute name
        self.__doc__ = handler.__doc__

    @property
    def shapes(self) -> tuple[type[EventShape], ...]:
        """The invocation shapes tried in order (the defaults load with the first invocation)."""
        if self._shapes is None:
            self._shapes = default_event_shapes()
        return self._shapes

    def run(self, delivered: Sequence[Delivered], invocation: Invocation[D]) -> BatchReport:
        """Call the handler on the decodable records; undecodable elements are rejected as they are."""
        return BatchReport.of(self._pairs(delivered, invocation)[0])

    def run_combined(self, deliveries: Sequence[tuple[Delivered, Invocation[D]]]) -> list[Outcome]:
        """One handler call for several deliveries of one record each (a batch function's
        per-event requests run together: one store write instead of one per request); an outcome
        per delivery, in order. A failure of the whole call is not shared: when the handler raises,
        each delivery is run again on its own, so a bad record cannot reject or retry the others."""
        if len(deliveries) == 1 or not self.batch:
            return [self._pairs([item], invocation)[0][0][1] for item, invocation in deliveries]
        first = deliveries[0][1]
        combined = replace(first, request_id="", headers=None, batch=True,
                           record_headers=[invocation.headers or {} for _, invocation in deliveries])
        pairs, whole_call_failed = self._pairs([item for item, _ in deliveries], combined)
        if whole_call_failed:
            return [self._pairs([item], invocation)[0][0][1] for item, invocation in deliveries]
        return [outcome for _, outcome in pairs]

    def _pairs(self, delivered: Sequence[Delivered],
               invocation: Invocation[D]) -> tuple[list[tuple[str, Outcome]], bool]:
        records = [item for item in delivered if isinstance(item, Record)]
        found, failed = self._outcomes(records, invocation) if records else ([], False)
        outcomes = iter(found)
        pairs = []
        for item in delivered:
            if isinstance(item, Undecodable):
                pairs.append((item.id, reject(item.reason)))
            else:
                pairs.append((item.id, next(outcomes)))
        return pairs, failed

    def _outcomes(self, records: list[Record], invocation: Invocation[D]) -> tuple[list[Outcome], bool]:
        """The records' outcomes, and whether the handler raised for the whole call."""
        if self.batch:
            handler: BatchHandler = self.handler  # type: ignore[assignment]
            try:
                outcomes = list(handler(records, invocation))
            except Reject as exc:
                return [reject(str(exc)) for _ in records], True
            except Exception as exc:  # a transient failure of the whole batch: deliver it again
                log.exception("event function %s failed on a batch of %d", self.name, len(records))
                return [retry(f"{type(exc).__name__}: {exc}") for _ in records], True
            check_outcomes(records, outcomes, self.name)
            return outcomes, False
        single: RecordHandler = self.handler  # type: ignore[assignment]
        results = []
        for record in records:
            try:
                outcome = single(record, invocation)
            except (Reject, RecordError) as exc:
                outcome = reject(str(exc))
            except Exception as exc:
                log.exception("event function %s failed on record %s", self.name, record.id)
                outcome = retry(f"{type(exc).__name__}: {exc}")
            if outcome is None:
                outcome = ok()
            elif not isinstance(outcome, Outcome):
                raise TypeError(f"event function {self.name!r} returned {type(outcome).__name__}, not an Outcome")
            results.append(outcome)
        return results, False

    def invocation(self, shape: str, context: Any = None, request_id: str = "",
                   headers: Mapping[str, str] | None = None, batch: bool = False) -> Invocation[D]:
        instance = self.app.instance()
        instance.credentials.observe(context)
        return Invocation(instance.deps, self.name, shape, request_id or getattr(context, "request_id", "") or "",
                          context, headers, batch, instance.credentials)

    def __call__(self, event: Any, context: Any) -> Any:
        """The FC handler: ``handler(event, context)`` of FC's built-in runtimes and ``/invoke``."""
        payload = parse_payload(event)
        shape = pick(self.shapes, payload, context, self.name)
        delivered = shape.records(payload, context)
        report = self.run(delivered, self.invocation(shape.name, context, batch=len(delivered) > 1))
        return shape.respond(report, payload, context)

    @property
    def target(self) -> Callable[[Any], Any]:
        """The functions-framework ``--asgi`` target: CloudEvents over HTTP, as a Knative sink."""
        from functions.bindings.cloudevents_http import sink_app
        from functions.bindings.functions_framework import target

        return target(lambda: sink_app(self))


class HttpFunction(Generic[D]):
    """An HTTP function: an ASGI app, given as is or made from the app's dependencies on first use."""

    kind = "http"

    def __init__(self, app: App[D], name: str, asgi: ASGIApp | None, factory: Callable[[D], ASGIApp] | None,
                 *, shapes: Sequence[type[HttpShape]] | None = None) -> None:
        if (asgi is None) == (factory is None):
            raise TypeError(f"http function {name!r}: give either an ASGI app or a factory, not both")
        self.app = app
        self.name = name
        self._shapes = None if shapes is None else tuple(shapes)
        self._asgi = asgi
        self._factory = factory
        self._lock = threading.Lock()
        self.__name__ = name

    @property
    def shapes(self) -> tuple[type[HttpShape], ...]:
        """The invocation shapes tried in order (the defaults load with the first invocation)."""
        if self._shapes is None:
            self._shapes = default_http_shapes()
        return self._shapes

    def asgi(self) -> ASGIApp:
        if self._asgi is None:
            with self._lock:
                if self._asgi is None:
                    assert self._factory is not None
                    self._asgi = self._factory(self.app.instance().deps)
        return self._asgi

    def handle(self, request: HttpRequest) -> HttpResponse:
        """One request through the ASGI app, from synchronous code (FC's built-in runtimes)."""
        return self.app.loop.run(call(self.asgi(), request))

    def __call__(self, event: Any, context: Any) -> Any:
        """The FC handler: FC 3.0 HTTP events and API Gateway events, or FC 2.0's WSGI call."""
        from functions.bindings.fc2_wsgi import Fc2Wsgi  # FC's built-in runtimes only

        payload = event if Fc2Wsgi.infer(event, context) else parse_payload(event)
        shape = pick(self.shapes, payload, context, self.name)
        fc_context = payload.get("fc.context") if shape is Fc2Wsgi else context
        self.app.instance().credentials.observe(fc_context)
        try:
            request = shape.request(payload, context)
        except RequestRefused as exc:  # e.g. a body over the limit: a 4xx, the app not called
            return shape.respond(exc.response(), payload, context)
        return shape.respond(self.handle(request), payload, context)

    @property
    def target(self) -> Callable[[Any], Any]:
        """The functions-framework ``--asgi`` target serving this app."""
        from functions.bindings.functions_framework import target

        return target(self.asgi)


AppFunction = HttpFunction[Any] | EventFunction[Any]


class App(Generic[D]):
    """One app's functions and the factory of the dependencies they share.

    ``module`` is the import path of the module that holds the app and exposes each function
    under its name (FC handlers are ``module.name``); ``dependencies(environ, credentials)``
    builds what the functions use, once per process; it may return an object with ``close()``.
    ``environ`` is the configuration mapping (default: the process environment, read by the
    entry points only).
    """

    def __init__(self, name: str, *, module: str, dependencies: Factory[D] | None = None,
                 environ: Mapping[str, str] | None = None, aliases: Mapping[str, str] | None = None,
                 target_env: str | None = None) -> None:
        self.name = name
        self.module = module
        # Other names a container may be told to serve a function by (``target_env``, e.g. a seed's ROLE).
        self.aliases = dict(aliases or {})
        self.target_env = target_env
        self.functions: dict[str, AppFunction] = {}
        self._dependencies: Factory[D] = dependencies or (lambda _environ, _credentials: None)  # type: ignore[assignment,return-value]
        self._environ = environ
        self._instance: Instance[D] | None = None
        self._lock = threading.Lock()
        self.loop = LoopThread(f"{name}-asgi-loop")

    def _add(self, function: AppFunction) -> None:
        if function.name in self.functions:
            raise ValueError(f"app {self.name!r} already has a function named {function.name!r}")
        if not function.name.isidentifier():
            raise ValueError(f"function name {function.name!r} must be a Python identifier (FC names the "
                             "handler module.name)")
        self.functions[function.name] = function

    def http(self, name: str, factory: Callable[[D], ASGIApp] | None = None, *, asgi: ASGIApp | None = None,
             shapes: Sequence[type[HttpShape]] | None = None) -> HttpFunction[D]:
        """Declare an HTTP function: an ASGI app, or ``factory(deps)`` making it on first use.
        ``shapes`` default to ``DEFAULT_HTTP_SHAPES``."""
        function = HttpFunction(self, name, asgi, factory, shapes=shapes)
        self._add(function)
        return function

    def event(self, name: str, *, batch: bool = False,
              shapes: Sequence[type[EventShape]] | None = None
              ) -> Callable[[Callable[..., Any]], EventFunction[D]]:
        """Declare an event function: ``(record, invocation) -> Outcome | None`` (None is ok; raising
        ``Reject`` rejects, any other exception asks for a retry), or with ``batch=True``
        ``(records, invocation) -> [Outcome, ...]``, one per record in order. ``shapes`` default to
        ``DEFAULT_EVENT_SHAPES``."""
        def register(handler: Callable[..., Any]) -> EventFunction[D]:
            function = EventFunction(self, name, handler, batch=batch, shapes=shapes)
            self._add(function)
            return function

        return register

    def function(self, name: str) -> AppFunction:
        try:
            return self.functions[name]
        except KeyError:
            known = ", ".join(sorted(self.functions)) or "none"
            raise KeyError(f"app {self.name!r} has no function {name!r} (it has: {known})") from None

    # -- the instance ---------------------------------------------------------------------

    def configure(self, environ: Mapping[str, str]) -> Instance[D]:
        """Use this environment (tests, local runs); the current instance, if any, is closed."""
        self.reset()
        with self._lock:
            self._environ = environ
            self._instance = Instance(self._dependencies, environ)
            return self._instance

    def instance(self) -> Instance[D]:
        instance = self._instance
        if instance is None:
            with self._lock:
                if self._instance is None:
                    # Entry points are where the process environment comes in; nothing deeper reads it.
                    self._instance = Instance(self._dependencies, os.environ if self._environ is None
                                              else self._environ)
                instance = self._instance
        return instance

    def initializer(self, context: Any = None) -> None:
        """FC's initializer hook (``module.initializer``): the dependencies are built once, here."""
        self.instance().initialize(context)
        log.info("%s: instance initialised", self.name)

    def reset(self) -> None:
        """Close the instance and forget it (and the ASGI apps built from it)."""
        with self._lock:
            instance, self._instance = self._instance, None
        for function in self.functions.values():
            if isinstance(function, HttpFunction) and function._factory is not None:
                function._asgi = None
        if instance is not None:
            instance.close()
