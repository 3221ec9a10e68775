"""Where and how the orders app runs: its functions' triggers, scaling and settings, declared once.

``barrage render --app examples.orders.deploy`` writes ``examples/orders/s.yaml`` (Function Compute)
and ``examples/orders/knative/`` from it; ``barrage up --app examples.orders.deploy`` runs the app
locally: the bundled broker, the KafkaSource-compatible dispatcher and both functions.
"""

from __future__ import annotations

from functions.app import (
    Deployment,
    Env,
    Function,
    HttpTrigger,
    KafkaTrigger,
    Resources,
    Scaling,
    SecretRef,
)

_KAFKA = "orders-kafka"

INTAKE = Function(
    key="intake", role="intake", fc_name="orders-intake", service="orders-intake",
    description="Orders in over HTTP, published to Kafka", handler="examples.orders.app.intake",
    initializer="examples.orders.app.initializer",
    trigger=HttpTrigger(methods=("GET", "POST")),
    scaling=Scaling(concurrency=10, max_instances=10), resources=Resources(timeout_s=10),
    env=(Env("KAFKA_SERVER"), Env("KAFKA_USER", secret=SecretRef(_KAFKA, "user")),
         Env("KAFKA_PWD", secret=SecretRef(_KAFKA, "password")), Env("KAFKA_TOPIC", "orders"),
         Env("ORDERS_DB", "/tmp/orders.db")),
)

TALLY = Function(
    key="tally", role="tally", fc_name="orders-tally", service="orders-tally",
    description="Totals orders per customer", handler="examples.orders.app.tally",
    initializer="examples.orders.app.initializer",
    trigger=KafkaTrigger(source_name="orders-source", topic="orders", consumer_group="orders-tally",
                         dead_letter_service="orders-dead-letter"),
    scaling=Scaling(concurrency=4), resources=Resources(timeout_s=30),
    env=(Env("ORDERS_DB", "/tmp/orders.db"),),
)

DEPLOYMENT = Deployment(
    name="orders", namespace="orders", image="registry.example.com/orders/orders", image_tag="0.1.0",
    kafka_bootstrap=("kafka.example.com:9092",), functions=(INTAKE, TALLY), domain_function="intake",
    output_dir="examples/orders", packages=("examples",),
)
