"""Tracing's export side: the OpenTelemetry SDK provider and exporters (``functions.adapters.tracing``
loads this only when ``TRACING`` names an endpoint).

Export is Zipkin JSON v2 (what Alibaba Cloud's tracing endpoints accept), or OTLP/HTTP when the
URL is an OTLP one (``.../v1/traces``). Spans leave through a bounded queue on a background
thread, so a collector that is down or slow costs a request nothing but dropped spans.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from functions.config import TracingConfig

log = logging.getLogger("barrage.tracing")
EXPORT_TIMEOUT_S = 2.0
MAX_QUEUE = 4096


def is_otlp(endpoint: str) -> bool:
    return endpoint.rstrip("/").endswith("/v1/traces")


class ForgivingExporter(SpanExporter):
    """Drops a batch the collector cannot take, with one log line instead of a traceback."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.endpoint = endpoint
        self._warned_at = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self.inner.export(spans)
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at > 60:  # at most a line a minute while the collector is away
                self._warned_at = now
                log.warning("tracing: %d span(s) dropped, %s unreachable: %s", len(spans), self.endpoint, exc)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def make_exporter(endpoint: str) -> SpanExporter:
    exporter: SpanExporter
    if is_otlp(endpoint):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)
    else:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        exporter = ZipkinExporter(endpoint=endpoint, timeout=int(EXPORT_TIMEOUT_S))
    return ForgivingExporter(exporter, endpoint)


def provider(config: TracingConfig, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider exporting to ``exporter``, else to ``config.endpoint``."""
    if exporter is None:
        if not config.endpoint:
            raise ValueError("tracing needs an endpoint (TRACING) or an exporter")
        exporter = make_exporter(config.endpoint)
    traced = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    traced.add_span_processor(
        BatchSpanProcessor(
            exporter, max_queue_size=MAX_QUEUE, max_export_batch_size=512, schedule_delay_millis=500,
            export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
        )
    )
    return traced
