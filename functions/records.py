"""What an event function receives and returns, on every platform.

A ``Record`` is one event, CloudEvent-shaped whatever carried it (a Knative KafkaSource POST, a
CloudEvents batch, an FC Kafka trigger through EventBridge, a direct invocation): its context
attributes, its extensions (``traceparent`` among them) and its data as delivered.

An ``Outcome`` says what became of one record. Each platform maps outcomes its own way
(``functions.bindings``): a Knative sink answers 2xx / 400 / 503, an FC Kafka trigger raises so
that the batch is retried, a direct invocation returns the report. ``BatchReport`` is the
per-record answer, after AWS Lambda Powertools' partial batch response.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SPEC_VERSION = "1.0"
# Attributes of CloudEvents 1.0 itself; any other attribute is an extension.
CONTEXT_ATTRIBUTES = frozenset({"specversion", "id", "source", "type", "subject", "time", "datacontenttype",
                                "dataschema"})
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")


class RecordError(ValueError):
    """A record's data cannot be read as asked (not JSON, not text); the message names why."""


@dataclass(frozen=True, slots=True)
class Record:
    """One event. ``data`` is what arrived: bytes (binary mode, Kafka values), or the JSON value
    of a structured event (``data_base64`` already decoded to bytes)."""

    id: str
    source: str
    type: str
    data: Any = None
    subject: str | None = None
    time: str | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None
    specversion: str = SPEC_VERSION
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def traceparent(self) -> str | None:
        return self.extensions.get("traceparent")

    def attributes(self) -> dict[str, str]:
        """Context attributes and extensions as strings (absent ones left out)."""
        attributes = {name: value for name in CONTEXT_ATTRIBUTES
                      if isinstance(value := getattr(self, name), str) and value}
        attributes.update(self.extensions)
        return attributes

    def text(self) -> str:
        """The data as text: bytes are UTF-8, a JSON value is re-encoded."""
        data = self.data
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                return bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(f"data is not UTF-8 text: {exc}") from None
        if isinstance(data, str):
            return data
        return json.dumps(data, ensure_ascii=False)

    def json(self) -> Any:
        """The data as a JSON value: parsed when it arrived as bytes or text."""
        data = self.data
        if isinstance(data, (bytes, bytearray, memoryview, str)):
            try:
                return json.loads(self.text())
            except RecursionError:
                raise RecordError("data is not JSON: nested too deeply") from None
            except ValueError as exc:
                raise RecordError(f"data is not JSON: {exc}") from None
        return data

    def to_structured(self) -> dict[str, Any]:
        """The event in CloudEvents' JSON format (bytes as ``data_base64``)."""
        document: dict[str, Any] = {"specversion": self.specversion, "id": self.id, "source": self.source,
                                    "type": self.type}
        for name in ("subject", "time", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value:
                document[name] = value
        document.update(self.extensions)
        if isinstance(self.data, (bytes, bytearray, memoryview)):
            document["data_base64"] = base64.b64encode(bytes(self.data)).decode("ascii")
        elif self.data is not None:
            document["data"] = self.data
        return document


def record_from_attributes(attributes: Mapping[str, str], data: Any) -> Record:
    """A record from string attributes (binary-mode headers, Kafka ``ce_`` headers).

    Raises ``RecordError`` naming the first required attribute that is missing.
    """
    for name in REQUIRED_ATTRIBUTES:
        if not attributes.get(name):
            raise RecordError(f"missing CloudEvent attribute {name}")
    return Record(
        id=attributes["id"], source=attributes["source"], type=attributes["type"], data=data,
        subject=attributes.get("subject") or None, time=attributes.get("time") or None,
        datacontenttype=attributes.get("datacontenttype") or None,
        dataschema=attributes.get("dataschema") or None, specversion=attributes["specversion"],
        extensions={k: v for k, v in attributes.items() if k not in CONTEXT_ATTRIBUTES},
    )


def record_from_structured(document: object) -> Record:
    """A record from one CloudEvent in the JSON format (a structured request, a batch element)."""
    if not isinstance(document, Mapping):
        raise RecordError("event is not a JSON object")
    attributes = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in document.items()
                  if k not in ("data", "data_base64") and v is not None}
    data: Any = document.get("data")
    if "data_base64" in document:
        try:
            data = base64.b64decode(str(document["data_base64"]), validate=True)
        except ValueError:
            raise RecordError("data_base64 is not base64") from None
    return record_from_attributes(attributes, data)


class OutcomeKind(enum.Enum):
    OK = "ok"
    DUPLICATE = "duplicate"  # already done before: as good as ok, nothing changed
    REJECT = "reject"  # permanent: retrying can never succeed (dead letter)
    RETRY = "retry"  # transient: deliver again later


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""
    # What the function wants reported for the record (e.g. the id it stored it under).
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.kind in (OutcomeKind.OK, OutcomeKind.DUPLICATE)


def ok(**detail: Any) -> Outcome:
    return Outcome(OutcomeKind.OK, detail=detail)


def duplicate(**detail: Any) -> Outcome:
    return Outcome(OutcomeKind.DUPLICATE, detail=detail)


def reject(reason: str, **detail: Any) -> Outcome:
    return Outcome(OutcomeKind.REJECT, reason, detail)


def retry(reason: str, **detail: Any) -> Outcome:
    return Outcome(OutcomeKind.RETRY, reason, detail)


class Reject(Exception):
    """Raised by a per-record function: this record is permanently bad (its outcome is ``reject``)."""


@dataclass(frozen=True, slots=True)
class Undecodable:
    """An element of a delivery that is not a record at all; it is rejected without calling the function."""

    id: str
    reason: str


Delivered = Record | Undecodable


@dataclass(frozen=True, slots=True)
class RecordResult:
    id: str
    outcome: Outcome

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.outcome.kind.value, "reason": self.outcome.reason,
                **dict(self.outcome.detail)}


@dataclass(frozen=True)
class BatchReport:
    """One result per delivered element, in delivery order."""

    results: tuple[RecordResult, ...]

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, Outcome]]) -> BatchReport:
        return cls(tuple(RecordResult(record_id, outcome) for record_id, outcome in pairs))

    def with_kind(self, kind: OutcomeKind) -> list[RecordResult]:
        return [r for r in self.results if r.outcome.kind is kind]

    @property
    def retry(self) -> list[RecordResult]:
        return self.with_kind(OutcomeKind.RETRY)

    @property
    def rejected(self) -> list[RecordResult]:
        return self.with_kind(OutcomeKind.REJECT)

    def counts(self) -> dict[str, int]:
        counts = {kind.value: 0 for kind in OutcomeKind}
        for result in self.results:
            counts[result.outcome.kind.value] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON: counts, every record's outcome, and Powertools' ``batchItemFailures``
        (the records a platform should deliver again)."""
        return {**self.counts(), "results": [r.to_dict() for r in self.results],
                "batchItemFailures": [{"itemIdentifier": r.id} for r in self.retry]}


def check_outcomes(records: Sequence[Record], outcomes: Sequence[Outcome], function: str) -> None:
    """A batch function must answer once per record; anything else is a bug in it, said plainly."""
    if len(outcomes) != len(records):
        raise TypeError(f"event function {function!r} returned {len(outcomes)} outcome(s) for "
                        f"{len(records)} record(s)")
    for outcome in outcomes:
        if not isinstance(outcome, Outcome):
            raise TypeError(f"event function {function!r} returned {type(outcome).__name__}, not an Outcome")
