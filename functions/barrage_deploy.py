"""Barrage's functions as deployed: the HomePage and the processor on Function Compute and Knative.

``barrage render`` (no ``--app``) turns this into s.yaml / s.public.yaml and knative/; a test fails
while the checked-in files differ from what it renders.
"""

from __future__ import annotations

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

_KAFKA_SECRET = "barrage-kafka"
_OTS_SECRET = "barrage-ots"

_COMMON_ENV = (
    Env("BARRAGE_DB", "/tmp/barrage.db"),
    Env("OTS_ENDPOINT"),
    Env("OTS_INSTANCENAME", "barrage"),
    Env("TABLE_NAME", "barrage"),
    # Knative on ECI: long-lived keys from a Secret until the adapter exchanges an RRSA token.
    Env("OTS_KEYID", secret=SecretRef(_OTS_SECRET, "access-key-id", optional=True), fc=False),
    Env("OTS_SECRET", secret=SecretRef(_OTS_SECRET, "access-key-secret", optional=True), fc=False),
    Env("BARRAGE_MASKED_WORDS"),
    Env("TRACING"),
    Env("PARENT_SPAN", "barrage-sender"),
)

HOMEPAGE = Function(
    key="homepage",
    role="homepage",
    fc_name="barrage-homepage",
    service="barrage-homepage",
    description="The barrage HomePage and its HTTP API",
    handler="functions.barrage_app.homepage",  # FC 3.0 HTTP events (and FC 2.0 WSGI): one handler
    trigger=HttpTrigger(),
    # The page streams (Server-Sent Events) and many viewers share an instance: a custom runtime
    # serves both, where the built-in runtime would hold each stream to the timeout, one per instance.
    fc_runtime="custom.debian10",
    scaling=Scaling(concurrency=20, min_instances=0, max_instances=10),
    resources=Resources(timeout_s=30),
    knative_workload="fc",
    env=(
        Env("ROLE", "homepage", fixed=True),
        Env("BARRAGE_BUS", "kafka"),
        Env("KAFKA_SERVER"),
        Env("KAFKA_USER", secret=SecretRef(_KAFKA_SECRET, "user")),
        Env("KAFKA_PWD", secret=SecretRef(_KAFKA_SECRET, "password")),
        Env("KAFKA_TOPIC", "barrage-info"),
        *_COMMON_ENV,
        Env("TRACE_NAME1", "sender"),
        Env("TRACE_NAME2", "receiver"),
        Env("TRACE_NAME3", "result"),
        Env("SUB_SPAN1", "sender"),
        Env("SUB_SPAN2", "result"),
    ),
)

PROCESSOR = Function(
    key="processor",
    role="processor",
    fc_name="barrage-processor",
    service="barrage-process",
    description="Cleans barrages from Kafka and stores them",
    handler="functions.barrage_app.processor",
    # Unordered: records are keyed by room, and "ordered" keeps one request in flight per partition,
    # so a busy room is served one barrage at a time (at most ~1,500/s here, whatever the scale-out:
    # eventing-kafka #1245) and a record being retried holds its room for the whole retry schedule.
    # The processor needs no order: writes are idempotent, the store numbers rows as they land, and
    # the page shows the newest first. Knative: up to 50 in flight; FC: 4 tasks instead of 1.
    trigger=KafkaTrigger(source_name="barrage-source", topic="barrage-info", consumer_group="barrage-process",
                         ordering="unordered", dead_letter_service="barrage-dead-letter"),
    # Knative's containerConcurrency (FC's built-in runtime serves one request at a time anyway).
    # Not the seed's 2: the processor runs the requests that wait together, in one store write
    # (functions.bindings.cloudevents_http.Combiner), so it needs them admitted; 50 is what an
    # unordered KafkaSource keeps in flight (max.poll.records). bench/processor_events.py: 2.3x
    # the events/s of 2, at less than half the CPU per event.
    scaling=Scaling(concurrency=50, min_instances=0, max_instances=100),
    resources=Resources(timeout_s=60),
    env=(
        Env("ROLE", "processor", fixed=True),
        Env("BARRAGE_BUS", "memory", fixed=True),  # the processor never publishes
        *_COMMON_ENV,
        Env("BARRAGE_LANES", "12"),
        Env("TRACE_NAME", "process"),
        Env("SUB_SPAN", "process"),
    ),
)

DEPLOYMENT = Deployment(
    name="barrage",
    namespace="default",
    image="registry.cn-hangzhou.aliyuncs.com/barrage/barrage",
    image_tag="0.1.0",
    kafka_bootstrap=("alikafka-post-cn-xxx-1-vpc.alikafka.aliyuncs.com:9092",),
    functions=(HOMEPAGE, PROCESSOR),
    domain_function="homepage",
    packages=("handlers",),
)
