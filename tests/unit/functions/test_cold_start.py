"""What an FC cold start imports: each entry loads what serves its first request, not the rest.

Checked in a fresh interpreter per case (``sys.modules`` after the entry's import), not by timing:
bench/cold_start.py measures the cost. Every module named here as not loaded is one an entry used
to load, or could easily start loading again through a top-level import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Needed by no FC entry before its first request: the deployment declaration (barrage render),
# the Kafka publisher (built with the dependencies), barrage's own domain and adapters (also built
# with the dependencies), the web stack (the HomePage's app is made on first use) and the SDKs.
NEVER_AT_ENTRY = (
    "functions.declaration", "functions.kafka", "functions.config", "functions.wiring", "functions.adapters",
    "functions.homepage", "functions.processor", "handlers", "starlette", "confluent_kafka", "opentelemetry",
    "tablestore", "cloudevents", "flask", "functions_framework",
)
HTTP_SHAPES = ("functions.bindings.fc2_wsgi", "functions.bindings.fc3_http", "functions.bindings.api_gateway")
EVENT_SHAPES = ("functions.bindings.fc_event", "functions.bindings.direct", "functions.bindings.kafka_record")


def loaded_after(code: str, **environ: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **environ})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def under(modules: set[str], prefixes: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)}


def test_the_fc_handler_module_loads_no_server_no_shape_and_no_dependency() -> None:
    # FC's python3.10 runtime imports the handler's module (functions.barrage_app.processor) first.
    modules = loaded_after("import functions.barrage_app")
    assert "functions.app" in modules and "functions.records" in modules
    unexpected = under(modules, (*NEVER_AT_ENTRY, *HTTP_SHAPES, *EVENT_SHAPES, "functions.bindings.cloudevents_http",
                                 "functions.bindings.custom_container", "functions.fc", "asyncio", "anyio", "uvicorn"))
    assert not unexpected


def test_the_custom_container_app_of_an_http_function_loads_no_invocation_shape() -> None:
    # What uvicorn's factory call imports for the HomePage (FC custom runtime / custom container).
    modules = loaded_after("import functions.serve; functions.serve.container_factory()",
                           FUNCTIONS_APP="functions.barrage_app", FUNCTION_TARGET="homepage")
    assert "functions.bindings.custom_container" in modules and "functions.fc" in modules
    assert not under(modules, (*NEVER_AT_ENTRY, *HTTP_SHAPES, *EVENT_SHAPES))


def test_an_event_function_loads_its_shapes_with_its_first_invocation() -> None:
    modules = loaded_after(
        "import functions.barrage_app as entry\n"
        "try:\n    entry.processor(b'[]', None)\nexcept Exception:\n    pass",
        BARRAGE_BUS="memory", BARRAGE_DB="/nonexistent/barrage.db")
    assert set(EVENT_SHAPES) <= modules
    assert not under(modules, HTTP_SHAPES)


def test_the_initializer_with_tracing_off_loads_no_opentelemetry_sdk(tmp_path: Path) -> None:
    # FC's initializer builds the dependencies before the first request; TRACING is unset by default.
    modules = loaded_after("import functions.barrage_app as entry\nentry.initializer(None)",
                           BARRAGE_BUS="memory", BARRAGE_DB=str(tmp_path / "barrage.db"))
    assert "functions.wiring" in modules and "opentelemetry.trace" in modules
    assert not under(modules, ("opentelemetry.sdk", "functions.adapters.tracing_export"))


@pytest.mark.parametrize(("name", "module"), [("Deployment", "functions.declaration"), ("Env", "functions.declaration"),
                                              ("KafkaTrigger", "functions.declaration"),
                                              ("RecordPublisher", "functions.kafka"),
                                              ("settings_from_environ", "functions.kafka"),
                                              ("RetryBatch", "functions.bindings.fc_event")])
def test_the_public_names_that_load_on_first_use_are_the_modules_own(name: str, module: str) -> None:
    import importlib

    import functions.app

    assert getattr(functions.app, name) is getattr(importlib.import_module(module), name)
    assert name in functions.app.__all__


def test_the_default_shapes_are_the_documented_ones() -> None:
    import functions.app
    from functions.bindings.direct import CloudEventInvocation, DirectInvocation
    from functions.bindings.fc_event import EventBridgeBatch

    assert (EventBridgeBatch, CloudEventInvocation, DirectInvocation) == functions.app.DEFAULT_EVENT_SHAPES
    assert [shape.name for shape in functions.app.DEFAULT_HTTP_SHAPES] == ["fc2-wsgi", "fc3-http", "api-gateway"]
    with pytest.raises(AttributeError, match="no attribute 'Deploymnet'"):
        _ = functions.app.Deploymnet  # type: ignore[attr-defined]
