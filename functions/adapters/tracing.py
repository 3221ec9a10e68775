"""Tracing: OpenTelemetry set-up and W3C trace-context helpers for every hop.

One barrage is one trace: the HomePage's send span, the Kafka publish (whose context rides
in the record as the CloudEvents ``traceparent`` extension, which a KafkaSource forwards),
the dispatcher's delivery (the HTTP ``traceparent`` header), the processing and the store
write. Export is Zipkin JSON v2 to ``TRACING`` (what Alibaba Cloud's tracing endpoints
accept), OTLP/HTTP when the URL is an OTLP one (``.../v1/traces``), nothing when unset
(``functions.adapters.tracing_export``, the SDK side, loads only then). Spans leave through a
bounded queue on a background thread, so a collector that is down or slow costs a request
nothing but dropped spans.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from functions.config import TracingConfig
from handlers.model import Barrage, ProcessedBarrage
from handlers.ports import AsyncPublisher, Page, Publisher, PutResult, ResultStore

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("barrage.tracing")
_propagator = TraceContextTextMapPropagator()


def tracer_provider(config: TracingConfig, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """A provider exporting to ``config.endpoint`` (or to ``exporter``); None when tracing is off.

    The OpenTelemetry SDK (``functions.adapters.tracing_export``) loads only when tracing is on:
    it is a good part of a cold start's imports, and tracing is off unless ``TRACING`` is set.
    """
    if exporter is None and not config.endpoint:
        return None
    from functions.adapters.tracing_export import provider

    return provider(config, exporter)


class Tracing:
    """The tracer of one process, and the span names of the seed's configuration."""

    def __init__(self, config: TracingConfig, provider: Any = None) -> None:
        self.config = config
        self.provider = provider
        source = provider if provider is not None else trace.NoOpTracerProvider()
        self.tracer: Tracer = source.get_tracer("barrage")

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def span(
        self, name: str, *, parent: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None, links: list[Link] | None = None,
    ) -> AbstractContextManager[Span]:
        if self.provider is None:
            # Tracing off: no span objects at all (this is on every request's path), but a
            # caller's own trace context is still carried on, as the no-op tracer would.
            return _NO_SPAN if parent is None else _carried(parent)
        return self._recorded(name, parent, kind, attributes, links)

    @contextmanager
    def _recorded(self, name: str, parent: Context | None, kind: SpanKind, attributes: Mapping[str, Any] | None,
                  links: list[Link] | None) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            name, context=parent, kind=kind, attributes=dict(attributes or {}), links=links,
            record_exception=True, set_status_on_exception=True,
        ) as span:
            yield span

    def shutdown(self) -> None:
        if self.provider is not None:
            try:
                self.provider.shutdown()
            except Exception:  # a collector that is gone must not fail a shutdown
                log.warning("tracing shutdown failed", exc_info=True)


_NO_SPAN: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


@contextmanager
def _carried(parent: Context) -> Iterator[Span]:
    token = attach(parent)
    try:
        yield trace.get_current_span(parent)
    finally:
        detach(token)


def from_config(config: TracingConfig) -> Tracing:
    return Tracing(config, tracer_provider(config))


def current_traceparent() -> dict[str, str]:
    """The active span as W3C headers (``traceparent`` and maybe ``tracestate``); empty if none."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def context_from(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """A parent context from W3C values; None when absent or malformed."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = _propagator.extract(carrier)
    span_context = trace.get_current_span(context).get_span_context()
    return context if span_context.is_valid else None


def link_to(traceparent: str | None) -> Link | None:
    context = context_from(traceparent)
    if context is None:
        return None
    return Link(trace.get_current_span(context).get_span_context())


class TracingStore:
    """A result store whose writes are spans (the store hop of a barrage's trace)."""

    def __init__(self, inner: ResultStore, tracing: Tracing) -> None:
        self.inner = inner
        self.tracing = tracing

    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        if not self.tracing.enabled:
            return self.inner.put_many(results)
        with self.tracing.span("store", kind=SpanKind.CLIENT, attributes={"barrage.count": len(results)}) as span:
            outcomes = self.inner.put_many(results)
            for status in ("stored", "duplicate", "failed"):
                span.set_attribute(f"barrage.{status}", sum(1 for o in outcomes if o.status.value == status))
            return outcomes

    def latest(self, room: str, limit: int) -> Page:
        return self.inner.latest(room, limit)

    def since(self, room: str, cursor: str | None, limit: int) -> Page:
        return self.inner.since(room, cursor, limit)

    def __getattr__(self, name: str) -> Any:  # count(), close() and other extras of the inner store
        return getattr(self.inner, name)


class TracingPublisher:
    """A publisher whose calls are PRODUCER spans; the Kafka adapter stamps their context."""

    def __init__(self, inner: Publisher, tracing: Tracing, destination: str) -> None:
        self.inner = inner
        self.tracing = tracing
        self.destination = destination

    def publish_many(self, barrages: Sequence[Barrage]) -> None:
        if not self.tracing.enabled:
            self.inner.publish_many(barrages)
            return
        attributes = {"messaging.destination.name": self.destination, "messaging.batch.message_count": len(barrages)}
        with self.tracing.span(f"publish {self.destination}", kind=SpanKind.PRODUCER, attributes=attributes):
            self.inner.publish_many(barrages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class AsyncTracingPublisher:
    """``TracingPublisher`` for an ``AsyncPublisher``: the span stays current across the await."""

    def __init__(self, inner: AsyncPublisher, tracing: Tracing, destination: str) -> None:
        self.inner = inner
        self.tracing = tracing
        self.destination = destination

    async def publish_many(self, barrages: Sequence[Barrage]) -> None:
        if not self.tracing.enabled:
            await self.inner.publish_many(barrages)
            return
        attributes = {"messaging.destination.name": self.destination, "messaging.batch.message_count": len(barrages)}
        with self.tracing.span(f"publish {self.destination}", kind=SpanKind.PRODUCER, attributes=attributes):
            await self.inner.publish_many(barrages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
