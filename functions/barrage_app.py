"""Barrage, the first app on the library: the HomePage (an HTTP function) and the processor (an event function).

Every platform's entry is here (FC handlers are ``functions.barrage_app.<name>``):

- ``homepage``: the page and its API, an ASGI app (``functions.homepage``); FC 3.0 HTTP
  events, API Gateway events and FC 2.0 WSGI calls;
- ``processor``: barrages from Kafka (FC's EventBridge trigger, a KafkaSource, the local
  dispatcher, direct invocation), cleaned and stored (``functions.processor``);
- ``initializer``: FC's initializer hook, builds the services once per instance.

``functions/main.py`` names the functions-framework targets. The import is light because it is
on every cold start: the domain, the adapters and the web stack load on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from functions.app import App, Invocation, Outcome, Record
from functions.lifecycle import CredentialsSource

if TYPE_CHECKING:
    from functions.asgi import ASGIApp
    from functions.wiring import Services


def build_services(environ: Mapping[str, str], credentials: CredentialsSource) -> Services:
    from functions.config import Settings
    from functions.wiring import build_services as build

    return build(Settings.from_environ(environ), credentials)


# ROLE (the seed's name; "manager" was its processor) picks the function in the container.
app: App[Services] = App("barrage", module=__name__, dependencies=build_services, target_env="ROLE",
                         aliases={"manager": "processor"})


def _homepage(services: Services) -> ASGIApp:
    from functions.homepage import create_app

    return create_app(services)


homepage = app.http("homepage", _homepage)


@app.event("processor", batch=True)
def processor(records: Sequence[Record], invocation: Invocation[Any]) -> list[Outcome]:
    """Barrages from Kafka, cleaned and stored; an outcome per record."""
    from functions.processor import process_records

    return process_records(records, invocation)


initializer = app.initializer
