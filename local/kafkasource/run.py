"""``barrage dispatch``: run the KafkaSource-compatible dispatcher from the manifest."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from functions.adapters.tracing import Tracing
from local.kafkasource.dispatcher import Consumer, Dispatcher, DispatchOptions
from local.kafkasource.manifest import KafkaSourceSpec, ManifestError, load_manifest
from local.kafkasource.mapping import KEY_TYPES, Record

log = logging.getLogger("barrage.dispatcher")
DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "knative" / "kafkasource.yaml"


class KafkaDeadLetterProducer:
    """Writes dead letters to a DLQ topic: the original record plus the dead-letter extensions.

    The extensions are those a dead-letter sink URL gets (``knativeerrordest``, ``knativeerrorcode``,
    ``knativeerrordata``, ``kne-*``), plus ``knativekafkapartition``/``knativekafkaoffset``: where
    the record was, since its copy lives elsewhere.
    """

    def __init__(self, settings: Any, timeout_s: float = 10.0) -> None:
        from confluent_kafka import Producer

        from functions.kafka import producer_config

        self._producer = Producer(producer_config(settings))
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def send(self, topic: str, record: Record, error_headers: dict[str, str]) -> None:
        # A binary CloudEvent record stays one: the failure travels as ce_ extension headers.
        prefix = "ce_" if "ce_specversion" in record.headers else ""
        headers: list[tuple[str, str | bytes | None]] = [
            *record.headers.items(), *((prefix + k, v.encode()) for k, v in error_headers.items())
        ]
        outcome: list[Any] = []
        with self._lock:
            self._producer.produce(
                topic, value=record.value, key=record.key, headers=headers,
                on_delivery=lambda err, _msg: outcome.append(err),
            )
            remaining = self._producer.flush(self._timeout_s)
        if remaining or not outcome or outcome[0] is not None:
            raise OSError(f"DLQ topic {topic} did not acknowledge: {outcome[0] if outcome else 'timeout'}")

    def close(self) -> None:
        self._producer.flush(self._timeout_s)


def kafka_consumer_factory(spec: KafkaSourceSpec, settings: Any) -> Callable[..., Consumer]:
    from local.kafka_consumer import KafkaRecordConsumer

    def factory(on_assign: Callable[..., None], on_revoke: Callable[..., None]) -> Consumer:
        consumer: Consumer = KafkaRecordConsumer(
            settings, spec.consumer_group, list(spec.topics), initial_offset=spec.initial_offset,  # type: ignore[arg-type]
            on_assign=on_assign, on_revoke=on_revoke,
        )
        return consumer

    return factory


def run_dispatchers(
    spec: KafkaSourceSpec, options: DispatchOptions, settings: Any, until: threading.Event,
    tracing: Tracing | None = None,
) -> None:
    """``spec.consumers`` dispatchers in one group, until ``until`` is set."""
    dead_letters = KafkaDeadLetterProducer(settings) if options.dead_letter_topic else None
    threads = []
    for index in range(spec.consumers):
        dispatcher = Dispatcher(spec, options, kafka_consumer_factory(spec, settings), dead_letters, tracing=tracing)
        thread = threading.Thread(target=dispatcher.run, args=(until,), name=f"consumer-{index}")
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    if dead_letters is not None:
        dead_letters.close()


@click.command("dispatch")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_MANIFEST,
              show_default=True, help="The KafkaSource manifest to follow.")
@click.option("--sink", "sink_url", help="URL of the sink (overrides the manifest's sink reference).")
@click.option("--service", "services", multiple=True, metavar="NAME=URL",
              help="Resolve a Service reference (sink or dead-letter sink) to a local URL.")
@click.option("--bootstrap", help="Bootstrap servers (default: KAFKA_SERVER, else the manifest's).")
@click.option("--dead-letter-url", help="Dead-letter sink URL (overrides the manifest's).")
@click.option("--dlq", is_flag=True, help="Dead-letter into the topic <topic>.dlq instead of a URL.")
@click.option("--batch-size", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="0: one event per request, as KafkaSource. N: CloudEvents batches of up to N.")
@click.option("--batch-linger-ms", type=click.FloatRange(0, 1000), default=5.0, show_default=True)
@click.option("--max-in-flight", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Unordered: requests in flight at once.")
@click.option("--ordering", type=click.Choice(["ordered", "unordered"]), help="Override the manifest's ordering.")
@click.option("--initial-offset", type=click.Choice(["earliest", "latest"]), help="Override initialOffset.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), default=None,
              help="Override the manifest's kafkasources.sources.knative.dev/key-type label (default string).")
def dispatch(
    manifest: Path, sink_url: str | None, services: tuple[str, ...], bootstrap: str | None,
    dead_letter_url: str | None, dlq: bool, batch_size: int, batch_linger_ms: float, max_in_flight: int,
    ordering: str | None, initial_offset: str | None, key_type: str | None,
) -> None:
    """Deliver Kafka records to the processor as Knative's KafkaSource does."""
    from dataclasses import replace

    from functions.kafka import KafkaSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = load_manifest(manifest)
        mapping = {}
        for item in services:
            name, sep, url = item.partition("=")
            if not sep or not url:
                raise ManifestError(f"--service {item!r}: expected NAME=URL")
            mapping[name] = url
        servers = bootstrap or os.environ.get("KAFKA_SERVER") or ",".join(spec.bootstrap_servers)
        spec = replace(spec, bootstrap_servers=tuple(s.strip() for s in servers.split(",") if s.strip()),
                       ordering=ordering or spec.ordering, initial_offset=initial_offset or spec.initial_offset)
        sink = sink_url or spec.sink.resolve(mapping)
        dead_letter = None
        if not dlq:
            dead_letter = dead_letter_url or (spec.delivery.dead_letter.resolve(mapping)
                                              if spec.delivery.dead_letter else None)
    except ManifestError as exc:
        click.echo(f"barrage dispatch: {exc}", err=True)
        sys.exit(2)
    settings = KafkaSettings(
        servers=spec.bootstrap_servers, topic=spec.topics[0],
        user=os.environ.get("KAFKA_USER") or None, password=os.environ.get("KAFKA_PWD") or None,
        ca_file=os.environ.get("KAFKA_CA") or None,
    )
    options = DispatchOptions(
        sink_url=sink, dead_letter_url=dead_letter,
        dead_letter_topic=f"{spec.topics[0]}.dlq" if dlq else None,
        batch_size=batch_size, batch_linger_s=batch_linger_ms / 1000, max_in_flight=max_in_flight, key_type=key_type,
    )
    until = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: until.set())
    signal.signal(signal.SIGINT, lambda *_: until.set())
    click.echo(f"dispatching {','.join(spec.topics)} -> {sink} ({spec.ordering}, "
               f"{'batch ' + str(batch_size) if batch_size else 'per event'})", err=True)
    tracing = dispatcher_tracing(os.environ)
    try:
        run_dispatchers(spec, options, settings, until, tracing)
    finally:
        tracing.shutdown()


def dispatcher_tracing(environ: Mapping[str, str]) -> Tracing:
    """Tracing from ``TRACING``, as the dispatcher's own service."""
    from dataclasses import replace

    from functions.adapters.tracing import from_config
    from functions.config import Settings

    config = Settings.from_environ(environ).tracing
    return from_config(replace(config, service_name=environ.get("POD_NAME") or "barrage-dispatcher"))
