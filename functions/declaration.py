"""The function set, declared once: ``barrage render`` turns it into s.yaml (Function Compute)
and knative/ (Knative Serving + Eventing).

Only what the two platforms share lives in the dataclasses (role, handler, trigger, scaling,
resources, environment); how each platform spells it is local/render.py's business. Edit this
file, then run ``barrage render --workload-class fc`` and ``--workload-class knative``; a test
fails while the checked-in files differ from what this declaration renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = str  # the function's name in its app (barrage: homepage, processor)
KnativeWorkload = Literal["eci", "fc"]
# sources.knative.dev/v1 is served from knative-v1.16; older Knative Eventing serves v1beta1 only.
KafkaSourceApiVersion = Literal["sources.knative.dev/v1", "sources.knative.dev/v1beta1"]
# How a function runs on Function Compute 3.0 (PLATFORM.md sections 2-3):
# - "python3.10": the built-in runtime calls the handler; one request per instance, no streaming;
# - "custom.debian10": the code package's ``bootstrap`` starts this project's server on CAPort
#   (Python 3.10 is built into that runtime, so the package's cp310 wheels load); instance
#   concurrency and streamed responses;
# - "custom-container": the image (Deployment.image) runs the same server.
FcRuntime = Literal["python3.10", "custom.debian10", "custom-container"]


@dataclass(frozen=True)
class SecretRef:
    """A key in a Kubernetes Secret (Knative); on FC the value comes from the deployer's env."""

    name: str
    key: str
    # optional: the pod still starts without it (e.g. Tablestore keys when a role provides STS keys).
    optional: bool = False


@dataclass(frozen=True)
class Env:
    """One environment variable.

    ``value`` set and ``fixed``: the same literal on every platform (ROLE, BARRAGE_BUS...).
    ``value`` set, not fixed: a default the deployer may override (FC ``${env('NAME', 'value')}``).
    ``value`` None: deployment-specific, no default (FC ``${env('NAME', '')}``, or ``${env('NAME')}``
    where the FC network path requires it; Knative reads it from the ConfigMap ``barrage-config``,
    or from ``secret`` when that is set).
    """

    name: str
    value: str | None = None
    fixed: bool = False
    secret: SecretRef | None = None
    fc: bool = True  # FC 3.0 gets STS keys from the function role: no Tablestore keys there
    knative: bool = True


@dataclass(frozen=True)
class HttpTrigger:
    methods: tuple[str, ...] = ("GET", "POST", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class KafkaTrigger:
    """Records of a topic delivered to the function as CloudEvents.

    FC: an EventBridge Kafka trigger (batches); Knative: a KafkaSource (one event per record).
    """

    source_name: str
    topic: str
    consumer_group: str
    initial_offset: Literal["earliest", "latest"] = "earliest"
    ordering: Literal["ordered", "unordered"] = "ordered"
    retries: int = 10
    backoff: Literal["exponential", "linear"] = "exponential"
    backoff_delay_s: float = 0.3  # Knative only: FC's EXPONENTIAL_DECAY_RETRY has a fixed schedule
    delivery_timeout_s: int = 30
    dead_letter_service: str = "dead-letter"  # Knative: a Service; FC: an MNS queue (<NAME>_DLQ_ARN)
    batch_count: int = 100  # FC only: Knative's KafkaSource does not batch
    batch_window_s: int = 3
    knative_api_version: KafkaSourceApiVersion = "sources.knative.dev/v1"  # Knative only
    # FC only. True: a batch that still fails after the retries goes to an MNS queue (the deployer
    # exports BARRAGE_DLQ_ARN; errorsTolerance ALL). False: errorsTolerance NONE, so the trigger
    # holds the stream at that batch until it succeeds: nothing is dropped, nothing else is needed.
    fc_dead_letter_queue: bool = False


@dataclass(frozen=True)
class Scaling:
    concurrency: int  # requests per instance: FC instanceConcurrency, Knative containerConcurrency
    min_instances: int = 0
    max_instances: int = 100


@dataclass(frozen=True)
class Resources:
    cpu: float = 0.35
    memory_mb: int = 512
    disk_mb: int = 512
    timeout_s: int = 30


@dataclass(frozen=True)
class EciPlacement:
    """Knative workload "eci": how the pods land on Alibaba Cloud Elastic Container Instances.

    ASK (ACK Serverless) runs every pod on ECI; on ACK only pods labelled
    ``alibabacloud.com/eci: "true"`` go there, so the label is rendered unless ``label`` is off.
    """

    label: bool = True
    # k8s.aliyun.com/eci-use-specs: ECS instance types or "<vCPU>-<memory>Gi" sizes, in order of
    # preference; unset, ECI sizes the instance from the requests (rounded up to an ECI size).
    use_specs: tuple[str, ...] = ()
    # k8s.aliyun.com/eci-imc-id: pin an image cache; unset, eci-auto-imc (on by default) picks one.
    image_cache_id: str | None = None
    auto_image_cache: bool | None = None  # k8s.aliyun.com/eci-auto-imc, rendered only when declared


@dataclass(frozen=True)
class Function:
    key: str  # s.yaml resource key
    role: Role
    fc_name: str  # FC functionName
    service: str  # Knative Service name (the KafkaSource sink refers to it)
    description: str
    handler: str  # FC code-package handler; the container picks its server by ROLE instead
    trigger: HttpTrigger | KafkaTrigger
    scaling: Scaling
    resources: Resources
    env: tuple[Env, ...]
    knative_workload: KnativeWorkload = "eci"
    eci: EciPlacement = EciPlacement()  # Knative workload "eci" only
    initializer: str | None = "functions.barrage_app.initializer"
    fc_runtime: FcRuntime = "python3.10"


@dataclass(frozen=True)
class Deployment:
    name: str
    namespace: str
    image: str  # one image for every role: the entrypoint reads ROLE and WORKLOAD_CLASS
    image_tag: str
    kafka_bootstrap: tuple[str, ...]  # Knative only: FC's trigger names the Kafka instance instead
    functions: tuple[Function, ...]
    domain_function: str  # the function the custom domain routes to
    dead_letter_image: str = "gcr.io/knative-releases/knative.dev/eventing/cmd/event_display"
    # Where `barrage render` writes s.yaml and knative/, relative to the repository root.
    output_dir: str = "."
    # The code package's own packages besides the library (`functions`): the app's code.
    packages: tuple[str, ...] = ()


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
    trigger=KafkaTrigger(source_name="barrage-source", topic="barrage-info", consumer_group="barrage-process",
                         dead_letter_service="barrage-dead-letter"),
    # 2 as the seed: the queue-proxy then holds 20 requests before answering 503 (retried).
    scaling=Scaling(concurrency=2, min_instances=0, max_instances=100),
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
