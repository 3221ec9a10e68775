"""Builds the adapters that settings ask for, once per process (or FC instance)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from functions.adapters.tracing import Tracing, TracingPublisher, TracingStore, from_config
from functions.config import Settings, TracingConfig
from handlers.ports import Clock, Publisher, ResultStore, SystemClock
from handlers.process import ProcessConfig

if TYPE_CHECKING:
    from functions.adapters.tablestore import KeySource

log = logging.getLogger("barrage")


@dataclass
class Services:
    settings: Settings
    store: ResultStore
    publisher: Publisher
    clock: Clock
    process_config: ProcessConfig
    # Things to close on shutdown (producers, clients).
    closers: list[Any] = field(default_factory=list)
    tracing: Tracing = field(default_factory=lambda: Tracing(TracingConfig()))

    def close(self) -> None:
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:  # closing is best effort; never mask the real shutdown reason
                log.exception("error while closing")


def process_config(settings: Settings) -> ProcessConfig:
    return ProcessConfig(
        masked_words=settings.masked_words,
        lanes=settings.lanes,
        max_per_user_per_batch=settings.max_per_user_per_batch,
    )


def build_store(settings: Settings, credentials: KeySource | None = None) -> ResultStore:
    """Tablestore when ``OTS_ENDPOINT`` is set, the SQLite file otherwise.

    ``credentials``: the function role's short-lived keys, read on every call (FC's STS keys expire).
    """
    if settings.tablestore is not None:
        from functions.adapters.tablestore import store_from_config

        return store_from_config(settings.tablestore, credentials)
    from functions.adapters.sqlite import SQLiteResultStore

    return SQLiteResultStore(settings.sqlite_path)


def build_publisher(settings: Settings, store: ResultStore, clock: Clock, config: ProcessConfig) -> Publisher:
    if settings.bus == "kafka":
        from functions.adapters.kafka import publisher_from_config
        from functions.adapters.tracing import current_traceparent

        assert settings.kafka is not None  # Settings.from_environ guarantees it
        # Each record carries the publish span's context as the CloudEvents traceparent.
        return publisher_from_config(settings.kafka, extensions=lambda _barrage: current_traceparent())
    from functions.adapters.memory import InProcessPublisher

    return InProcessPublisher(store, clock, config)


def build_services(settings: Settings, credentials: KeySource | None = None,
                   tracing: Tracing | None = None) -> Services:
    clock = SystemClock()
    config = process_config(settings)
    tracing = tracing or from_config(settings.tracing)
    raw_store = build_store(settings, credentials)
    store = TracingStore(raw_store, tracing)
    raw_publisher = build_publisher(settings, store, clock, config)
    publisher = TracingPublisher(raw_publisher, tracing, settings.kafka.topic if settings.kafka else "memory")
    services = Services(settings, store, publisher, clock, config, tracing=tracing)
    for resource in (raw_publisher, raw_store):
        close = getattr(resource, "close", None)
        if callable(close):
            services.closers.append(close)
    services.closers.append(tracing.shutdown)
    return services
