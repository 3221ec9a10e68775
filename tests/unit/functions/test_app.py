"""functions.app: declaring functions, their outcomes, and one instance per process."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from functions.app import App, Invocation, Outcome, Record, Reject, RetryBatch, duplicate, ok
from functions.fc import context_from_headers
from functions.lifecycle import CredentialsSource


class Deps:
    built = 0

    def __init__(self, environ: Mapping[str, str], credentials: CredentialsSource) -> None:
        Deps.built += 1
        self.environ = environ
        self.credentials = credentials
        self.closed = False
        self.seen: list[Any] = []

    def close(self) -> None:
        self.closed = True


def make_app() -> App[Deps]:
    app: App[Deps] = App("t", module=__name__, dependencies=Deps, environ={"GREETING": "hi"})

    @app.event("each")
    def each(record: Record, invocation: Invocation[Deps]) -> Outcome | None:
        value = record.json()
        invocation.deps.seen.append(value)
        if value.get("reject"):
            raise Reject("no thanks")
        if value.get("boom"):
            raise RuntimeError("store down")
        if value.get("again"):
            return duplicate()
        return None

    @app.event("batch", batch=True)
    def batch(records: Sequence[Record], invocation: Invocation[Deps]) -> list[Outcome]:
        return [ok(n=i) for i, _ in enumerate(records)]

    @app.event("short", batch=True)
    def short(records: Sequence[Record], invocation: Invocation[Deps]) -> list[Outcome]:
        return []

    return app


CONTEXT = context_from_headers({"x-fc-request-id": "r1", "x-fc-access-key-id": "AK1",
                                "x-fc-access-key-secret": "S1", "x-fc-security-token": "T1"})


def test_per_record_function_outcomes_in_order() -> None:
    app = make_app()
    report = app.function("each")([{"a": 1}, {"reject": 1}, {"again": 1}, 5], CONTEXT)
    assert [r["status"] for r in report["results"]] == ["ok", "reject", "duplicate", "reject"]
    assert report["results"][1]["reason"] == "no thanks"
    assert report["results"][3]["reason"] == "element 3 is not a JSON object"
    assert report["results"][0]["id"] == "r1#0"


def test_an_exception_is_a_retry_and_the_fc_trigger_retries() -> None:
    app = make_app()
    with pytest.raises(RetryBatch, match="RuntimeError: store down"):
        app.function("each")([{"a": 1}, {"boom": 1}], CONTEXT)


def test_batch_functions_answer_once_per_record() -> None:
    app = make_app()
    assert [r["n"] for r in app.function("batch")([{}, {}, {}], CONTEXT)["results"]] == [0, 1, 2]
    with pytest.raises(TypeError, match="returned 0 outcome\\(s\\) for 2 record\\(s\\)"):
        app.function("short")([{}, {}], CONTEXT)


def test_a_single_cloudevent_invocation() -> None:
    app = make_app()
    event = {"specversion": "1.0", "id": "ce-1", "source": "/x", "type": "t", "data": {"a": 2}}
    assert app.function("each")(json.dumps(event), CONTEXT)["results"][0]["id"] == "ce-1"


def test_dependencies_are_built_once_per_process_even_when_raced() -> None:
    app = make_app()
    before = Deps.built
    threads = [threading.Thread(target=app.function("each"), args=([{"a": 1}], CONTEXT)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Deps.built == before + 1
    deps = app.instance().deps
    assert len(deps.seen) == 8 and deps.environ == {"GREETING": "hi"}


def test_reset_closes_what_was_built() -> None:
    app = make_app()
    deps = app.instance().deps
    app.reset()
    assert deps.closed and app.instance().deps is not deps


def test_credentials_follow_each_invocation() -> None:
    app = make_app()
    app.function("each")([{}], CONTEXT)
    source = app.instance().deps.credentials
    first = source.current()
    assert first is not None and (first.access_key_id, first.security_token) == ("AK1", "T1")
    version = source.version
    renewed = context_from_headers({"x-fc-access-key-id": "AK2", "x-fc-access-key-secret": "S2",
                                    "x-fc-security-token": "T2"})
    app.function("each")([{}], renewed)
    second = source.current()
    assert second is not None and second.access_key_id == "AK2" and source.version == version + 1


def test_initializer_builds_the_dependencies() -> None:
    app = make_app()
    before = Deps.built
    app.initializer(CONTEXT)
    assert Deps.built == before + 1


def test_names_are_checked() -> None:
    app = make_app()
    with pytest.raises(ValueError, match="already has a function named 'each'"):
        app.event("each")(lambda record, invocation: None)
    with pytest.raises(ValueError, match="must be a Python identifier"):
        app.http("bad-name", asgi=lambda scope, receive, send: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(KeyError, match="has no function 'nope' \\(it has: batch, each, short\\)"):
        app.function("nope")
    with pytest.raises(TypeError, match="either an ASGI app or a factory"):
        app.http("neither")
