"""The KafkaSource manifest: the settings the dispatcher takes from ``knative/kafkasource.yaml``.

``delivery`` is read as eventing-kafka-broker's control plane reads it: with no ``delivery``
(or one naming none of ``deadLetterSink``, ``retry``, ``timeout``) the data plane's defaults
apply: 10 retries, exponential from PT0.3S, PT600S. Otherwise each field stands alone: no
``retry`` means no retries, no ``backoffPolicy`` exponential, no ``backoffDelay`` PT0.3S.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from local.kafkasource.mapping import KEY_TYPE_LABEL, KEY_TYPES, SourceContext

API_VERSIONS = ("sources.knative.dev/v1", "sources.knative.dev/v1beta1")  # v1 from knative-v1.16
ORDERINGS = ("ordered", "unordered")
OFFSETS = ("earliest", "latest")
BACKOFF_POLICIES = ("exponential", "linear")
_DURATION = re.compile(
    r"P(?:(?P<days>\d+(?:\.\d+)?)D)?(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)


class ManifestError(ValueError):
    """A manifest the dispatcher cannot run; the message names the field."""


def parse_duration(text: str, field_name: str) -> float:
    """ISO-8601 duration (``PT0.3S``, ``PT1M``) in seconds, as Knative's delivery fields use."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None or text.strip() in ("P", "PT"):
        raise ManifestError(f"{field_name}: {text!r} is not an ISO-8601 duration such as PT0.3S")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return parts.get("days", 0) * 86400 + parts.get("hours", 0) * 3600 + parts.get("minutes", 0) * 60 + parts.get(
        "seconds", 0
    )


@dataclass(frozen=True)
class Destination:
    """A sink: a URI, or a reference to a Service that resolves to one locally."""

    uri: str | None = None
    ref_name: str | None = None
    ref_kind: str | None = None

    def resolve(self, services: Mapping[str, str]) -> str:
        if self.uri:
            return self.uri
        if self.ref_name and self.ref_name in services:
            return services[self.ref_name]
        raise ManifestError(f"no local URL for {self.ref_kind or 'Service'} {self.ref_name!r}; map it with --sink")


@dataclass(frozen=True)
class Delivery:
    """Retries and dead-letter sink; the defaults are the data plane's, for an absent ``delivery``."""

    retry: int = 10
    backoff_policy: str = "exponential"
    backoff_delay_s: float = 0.3
    timeout_s: float = 600.0
    dead_letter: Destination | None = None

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based), as Knative computes it."""
        if self.backoff_policy == "linear":
            return self.backoff_delay_s * attempt
        return float(self.backoff_delay_s * 2**attempt)


@dataclass(frozen=True)
class KafkaSourceSpec:
    name: str
    namespace: str
    bootstrap_servers: tuple[str, ...]
    topics: tuple[str, ...]
    consumer_group: str
    sink: Destination
    consumers: int = 1
    initial_offset: str = "latest"
    ordering: str = "ordered"
    delivery: Delivery = field(default_factory=Delivery)
    sasl_enabled: bool = False
    tls_enabled: bool = False
    ce_extensions: Mapping[str, str] = field(default_factory=dict)
    key_type: str = "string"  # the kafkasources.sources.knative.dev/key-type label
    api_version: str = "sources.knative.dev/v1"

    def source_attribute(self, topic: str) -> str:
        return self.context().source(topic)

    def context(self, key_type: str | None = None) -> SourceContext:
        """What the mapping needs; ``key_type`` overrides the label."""
        # EKB writes /apis/v1/ whichever version the KafkaSource was created with.
        return SourceContext(f"/apis/v1/namespaces/{self.namespace}/kafkasources/{self.name}",
                             key_type or self.key_type, dict(self.ce_extensions))

    def with_bootstrap(self, servers: tuple[str, ...]) -> KafkaSourceSpec:
        return replace(self, bootstrap_servers=servers)


def _destination(raw: Any, field_name: str) -> Destination:
    if not isinstance(raw, dict):
        raise ManifestError(f"{field_name}: must be an object with ref or uri")
    ref = raw.get("ref")
    uri = raw.get("uri")
    if ref is None and not uri:
        raise ManifestError(f"{field_name}: needs ref or uri")
    if ref is not None and (not isinstance(ref, dict) or not ref.get("name")):
        raise ManifestError(f"{field_name}.ref: needs a name")
    return Destination(
        uri=str(uri) if uri else None,
        ref_name=str(ref["name"]) if ref else None,
        ref_kind=str(ref.get("kind", "Service")) if ref else None,
    )


def _delivery(raw: Any) -> Delivery:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ManifestError("spec.delivery: must be an object")
    policy = raw.get("backoffPolicy", "exponential")
    if policy not in BACKOFF_POLICIES:
        raise ManifestError(f"spec.delivery.backoffPolicy: must be one of {', '.join(BACKOFF_POLICIES)}")
    retry = raw.get("retry", 0)
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise ManifestError("spec.delivery.retry: must be a non-negative integer")
    backoff_delay = parse_duration(raw.get("backoffDelay", "PT0.3S"), "spec.delivery.backoffDelay")
    timeout = parse_duration(raw.get("timeout", "PT600S"), "spec.delivery.timeout")
    dead_letter = (_destination(raw["deadLetterSink"], "spec.delivery.deadLetterSink")
                   if raw.get("deadLetterSink") is not None else None)
    if not any(raw.get(name) is not None for name in ("deadLetterSink", "retry", "timeout")):
        return Delivery()  # EKB sees no egress config: the data plane's defaults, policy and delay included
    return Delivery(retry=retry, backoff_policy=policy, backoff_delay_s=backoff_delay, timeout_s=timeout,
                    dead_letter=dead_letter)


def parse_manifest(document: Mapping[str, Any]) -> KafkaSourceSpec:
    if document.get("kind") != "KafkaSource":
        raise ManifestError(f"kind: expected KafkaSource, got {document.get('kind')!r}")
    api_version = document.get("apiVersion")
    if api_version not in API_VERSIONS:
        raise ManifestError(f"apiVersion: expected one of {', '.join(API_VERSIONS)}, got {api_version!r}")
    metadata = document.get("metadata") or {}
    labels = metadata.get("labels") or {}
    key_type = labels.get(KEY_TYPE_LABEL, "string") if isinstance(labels, dict) else "string"
    if key_type not in KEY_TYPES:
        raise ManifestError(f"metadata.labels.{KEY_TYPE_LABEL}: must be one of {', '.join(KEY_TYPES)}")
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError("spec: missing")
    servers = spec.get("bootstrapServers")
    topics = spec.get("topics")
    if not isinstance(servers, list) or not servers:
        raise ManifestError("spec.bootstrapServers: must be a non-empty list")
    if not isinstance(topics, list) or not topics:
        raise ManifestError("spec.topics: must be a non-empty list")
    ordering = spec.get("ordering", "ordered")
    if ordering not in ORDERINGS:
        raise ManifestError(f"spec.ordering: must be one of {', '.join(ORDERINGS)}")
    offset = spec.get("initialOffset", "latest")
    if offset not in OFFSETS:
        raise ManifestError(f"spec.initialOffset: must be one of {', '.join(OFFSETS)}")
    consumers = spec.get("consumers", 1)
    if not isinstance(consumers, int) or isinstance(consumers, bool) or consumers < 1:
        raise ManifestError("spec.consumers: must be a positive integer")
    if "sink" not in spec:
        raise ManifestError("spec.sink: missing")
    delivery = _delivery(spec.get("delivery"))
    net = spec.get("net") or {}
    name = str(metadata.get("name") or "")
    if not name:
        raise ManifestError("metadata.name: missing")
    return KafkaSourceSpec(
        name=name,
        namespace=str(metadata.get("namespace") or "default"),
        bootstrap_servers=tuple(str(s) for s in servers),
        topics=tuple(str(t) for t in topics),
        consumer_group=str(spec.get("consumerGroup") or f"knative-kafka-source-{name}"),
        sink=_destination(spec["sink"], "spec.sink"),
        consumers=consumers,
        initial_offset=offset,
        ordering=ordering,
        delivery=delivery,
        sasl_enabled=bool((net.get("sasl") or {}).get("enable", False)),
        tls_enabled=bool((net.get("tls") or {}).get("enable", False)),
        ce_extensions={str(k): str(v) for k, v in ((spec.get("ceOverrides") or {}).get("extensions") or {}).items()},
        key_type=key_type,
        api_version=str(api_version),
    )


def load_manifest(path: str | Path) -> KafkaSourceSpec:
    """The KafkaSource in a YAML file (the first document of kind KafkaSource)."""
    try:
        documents = list(yaml.safe_load_all(Path(path).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: {exc}") from None
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "KafkaSource":
            return parse_manifest(document)
    raise ManifestError(f"{path}: no KafkaSource in the file")
