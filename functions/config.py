"""Configuration from an environment mapping, read and checked once.

The names are the seed deployment's (``KAFKA_SERVER``, ``OTS_ENDPOINT``, ``TRACING``, ...);
``BARRAGE_*`` names are this project's own. Unset Kafka and Tablestore settings select the
embedded defaults (in-process or bundled broker, SQLite). Nothing here reads ``os.environ``
by itself: entry points pass it in, tests pass a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BUSES = ("memory", "kafka")
DEFAULT_TOPIC = "barrage-info"
DEFAULT_TABLE = "barrage"
DEFAULT_MAX_STREAMS = 10_000
# 50 ms: a stored barrage reaches the page's viewers within about one frame budget of a live view;
# each room with viewers costs 20 store reads a second per HomePage process, not per viewer.
DEFAULT_STREAM_TICK_MS = 50


class ConfigError(ValueError):
    """One bad setting; the message is one line naming the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class Config:
    """Typed reads from a mapping, each failure naming its variable (as starlette's Config)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def cast(self, name: str, cast: Callable[[str], T], default: T) -> T:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return cast(raw)
        except ValueError as exc:
            raise ConfigError(name, f"invalid value {raw!r} ({exc})") from None

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.cast(name, int, default)
        if minimum is not None and value < minimum:
            raise ConfigError(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(name, f"must be at most {maximum}, got {value}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = (self.get(name) or default).lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def csv(self, name: str) -> tuple[str, ...]:
        raw = self.get(name) or ""
        return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class KafkaConfig:
    servers: tuple[str, ...]
    topic: str = DEFAULT_TOPIC
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None


@dataclass(frozen=True)
class TablestoreConfig:
    endpoint: str
    instance: str
    table: str = DEFAULT_TABLE
    access_key_id: str | None = None
    access_key_secret: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    ttl_seconds: int = -1
    max_versions: int = 1


@dataclass(frozen=True)
class TracingConfig:
    endpoint: str | None = None
    # Span names keep the seed's environment names and defaults.
    parent_span: str = "barrage-sender"
    sender_span: str = "sender"
    receiver_span: str = "receiver"
    result_span: str = "result"
    process_span: str = "process"
    service_name: str = "barrage"


@dataclass(frozen=True)
class Settings:
    bus: str
    kafka: KafkaConfig | None
    tablestore: TablestoreConfig | None
    sqlite_path: Path
    tracing: TracingConfig
    masked_words: tuple[str, ...] = ()
    lanes: int = 12
    max_per_user_per_batch: int | None = None
    max_body_bytes: int = 1_048_576
    container_concurrency: int = 2
    role: str = "homepage"
    pod_name: str | None = None
    pod_namespace: str | None = None
    # Open Server-Sent Event streams per HomePage process. Under the event loop a stream costs
    # a few kilobytes, not a thread, so the default is sized for thousands of viewers.
    # 0: this runtime does not stream (FC built-in runtimes buffer whole answers); the page polls.
    max_streams: int = DEFAULT_MAX_STREAMS
    # Origins allowed to call the API cross-origin; empty sends no CORS headers.
    cors_origins: tuple[str, ...] = ()
    # How often the HomePage's stream hub reads each room that has viewers: the most a stored
    # barrage waits before it is pushed. One read per room per tick, however many viewers.
    stream_tick_ms: int = DEFAULT_STREAM_TICK_MS

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        config = Config(environ)
        kafka = _kafka(config)
        bus = config.choice("BARRAGE_BUS", BUSES, "kafka" if kafka else "memory")
        if bus == "kafka" and kafka is None:
            raise ConfigError("KAFKA_SERVER", "required when BARRAGE_BUS is kafka")
        user_limit = config.integer("BARRAGE_USER_BATCH_LIMIT", 0, minimum=0)
        role = config.get("ROLE", "homepage") or "homepage"
        pod_name = config.get("POD_NAME")
        return cls(
            bus=bus,
            kafka=kafka,
            tablestore=_tablestore(config),
            sqlite_path=Path(config.get("BARRAGE_DB", ".barrage/barrage.db") or ""),
            tracing=_tracing(config, service_name=pod_name or config.get("FC_FUNCTION_NAME") or f"barrage-{role}"),
            masked_words=config.csv("BARRAGE_MASKED_WORDS"),
            lanes=config.integer("BARRAGE_LANES", 12, minimum=1, maximum=64),
            max_per_user_per_batch=user_limit or None,
            max_body_bytes=config.integer("BARRAGE_MAX_BODY_BYTES", 1_048_576, minimum=1024),
            container_concurrency=config.integer("CONTAINER_CONCURRENCY", 2, minimum=0),
            role=role,
            pod_name=pod_name,
            pod_namespace=config.get("POD_NAMESPACE"),
            # FUNCTIONS_STREAMING=off: the library says this runtime cannot stream (FC's built-in ones).
            max_streams=config.integer("BARRAGE_MAX_STREAMS", 0 if (config.get("FUNCTIONS_STREAMING") or "").lower()
                                       == "off" else DEFAULT_MAX_STREAMS, minimum=0),
            cors_origins=config.csv("BARRAGE_CORS_ORIGINS"),
            stream_tick_ms=config.integer("BARRAGE_STREAM_TICK_MS", DEFAULT_STREAM_TICK_MS, minimum=5, maximum=10_000),
        )


def _kafka(config: Config) -> KafkaConfig | None:
    servers = config.csv("KAFKA_SERVER")
    user, password = config.get("KAFKA_USER"), config.get("KAFKA_PWD")
    if not servers:
        if user or password:
            raise ConfigError("KAFKA_SERVER", "required when KAFKA_USER or KAFKA_PWD is set")
        return None
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("KAFKA_SERVER", f"{server!r} is not host:port")
    if bool(user) != bool(password):
        missing = "KAFKA_PWD" if user else "KAFKA_USER"
        raise ConfigError(missing, "KAFKA_USER and KAFKA_PWD must be set together")
    ca_file = config.get("KAFKA_CA")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError("KAFKA_CA", f"no such file: {ca_file}")
    return KafkaConfig(servers, config.get("KAFKA_TOPIC", DEFAULT_TOPIC) or DEFAULT_TOPIC, user, password, ca_file)


def _tablestore(config: Config) -> TablestoreConfig | None:
    endpoint = config.get("OTS_ENDPOINT")
    if endpoint is None:
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError("OTS_ENDPOINT", "must start with http:// or https://")
    instance = config.get("OTS_INSTANCENAME")
    if instance is None:
        raise ConfigError("OTS_INSTANCENAME", "required when OTS_ENDPOINT is set")
    # Short-lived STS keys (FC 3.0 env, or a role) come before long-lived keys.
    key_id = config.get("ALIBABA_CLOUD_ACCESS_KEY_ID") or config.get("OTS_KEYID")
    secret = config.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET") if config.get("ALIBABA_CLOUD_ACCESS_KEY_ID") else None
    secret = secret or config.get("OTS_SECRET")
    token = config.get("ALIBABA_CLOUD_SECURITY_TOKEN") if config.get("ALIBABA_CLOUD_ACCESS_KEY_ID") else None
    if bool(key_id) != bool(secret):
        raise ConfigError("OTS_SECRET" if key_id else "OTS_KEYID", "OTS_KEYID and OTS_SECRET must be set together")
    ttl = config.integer("BARRAGE_OTS_TTL", -1)
    if ttl != -1 and ttl < 86400:
        raise ConfigError("BARRAGE_OTS_TTL", "must be -1 (keep forever) or at least 86400 seconds")
    return TablestoreConfig(
        endpoint=endpoint,
        instance=instance,
        table=config.get("TABLE_NAME", DEFAULT_TABLE) or DEFAULT_TABLE,
        access_key_id=key_id,
        access_key_secret=secret,
        security_token=token,
        ttl_seconds=ttl,
        max_versions=config.integer("BARRAGE_OTS_MAX_VERSIONS", 1, minimum=1),
    )


def _tracing(config: Config, service_name: str) -> TracingConfig:
    endpoint = config.get("TRACING")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigError("TRACING", "must be an http(s) URL of a Zipkin or OTLP endpoint")
    return TracingConfig(
        endpoint=endpoint,
        parent_span=config.get("PARENT_SPAN", "barrage-sender") or "barrage-sender",
        sender_span=config.get("TRACE_NAME1") or config.get("SUB_SPAN1") or "sender",
        receiver_span=config.get("TRACE_NAME2") or "receiver",
        result_span=config.get("TRACE_NAME3") or config.get("SUB_SPAN2") or "result",
        process_span=config.get("TRACE_NAME") or config.get("SUB_SPAN") or "process",
        service_name=service_name,
    )
