"""One instance of an app per process: its dependencies built once, from the injected config.

Function Compute calls the initializer once per instance (or the first invocation builds the
dependencies); a functions-framework or custom-container process builds them on first use.
Either way there is one ``Instance``; it closes what it built when the process ends.

Short-lived credentials (FC's STS keys, which expire) are not captured at start: each
invocation hands its context's keys to ``CredentialsSource.observe`` and adapters read
``CredentialsSource.current()`` when they sign a call.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger("functions.lifecycle")

D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class AccessKey:
    """An Alibaba Cloud access key: a RAM role's STS keys (with a token) or a long-lived pair."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None


def _text(obj: Any, *names: str) -> str:
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if isinstance(value, str) and value:
            return value
    return ""


def key_from_context(context: Any) -> AccessKey | None:
    """The STS keys an FC context carries (``context.credentials``), if any."""
    creds = getattr(context, "credentials", None) if context is not None else None
    if creds is None:
        return None
    key_id = _text(creds, "access_key_id", "accessKeyId")
    secret = _text(creds, "access_key_secret", "accessKeySecret")
    if not (key_id and secret):
        return None
    return AccessKey(key_id, secret, _text(creds, "security_token", "securityToken") or None)


def key_from_environ(environ: Mapping[str, str]) -> AccessKey | None:
    """FC 3.0's ``ALIBABA_CLOUD_*`` variables (the function role's keys on python3.12 and custom runtimes)."""
    key_id = environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
    secret = environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")
    if not (key_id and secret):
        return None
    return AccessKey(key_id, secret, environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None)


class CredentialsSource:
    """The newest access key this instance has seen; adapters ask for it on every call."""

    def __init__(self, initial: AccessKey | None = None) -> None:
        self._key = initial
        self._version = 0
        self._lock = threading.Lock()

    def observe(self, context: Any) -> None:
        key = key_from_context(context)
        if key is not None and key != self._key:
            with self._lock:
                self._key = key
                self._version += 1

    def current(self) -> AccessKey | None:
        return self._key

    @property
    def version(self) -> int:
        """Grows each time the key changes, so a client can rebuild itself only then."""
        return self._version


Factory = Callable[[Mapping[str, str], CredentialsSource], D]


class Instance(Generic[D]):
    """An app's dependencies for this process: built once (thread-safe), closed once."""

    def __init__(self, factory: Factory[D], environ: Mapping[str, str], *, close_at_exit: bool = True) -> None:
        self._factory = factory
        self.environ = environ
        self.credentials = CredentialsSource(key_from_environ(environ))
        self._deps: D | None = None
        self._built = False
        self._lock = threading.Lock()
        self._closed = False
        if close_at_exit:
            atexit.register(self.close)

    @property
    def built(self) -> bool:
        """The dependencies exist: ``deps`` returns at once, without blocking."""
        return self._built

    @property
    def deps(self) -> D:
        if not self._built:  # later calls take no lock
            with self._lock:
                if self._closed:
                    raise RuntimeError("this instance is closed")
                if not self._built:
                    self._deps = self._factory(self.environ, self.credentials)
                    self._built = True
        return self._deps  # type: ignore[return-value]  # set with _built

    def initialize(self, context: Any = None) -> None:
        """FC's initializer hook (and the custom container's ``/initialize``)."""
        self.credentials.observe(context)
        _ = self.deps

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            deps, built = self._deps, self._built
            self._deps, self._built = None, False
        if built:
            close = getattr(deps, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # closing is best effort; never mask the real shutdown reason
                    log.exception("error while closing the instance's dependencies")
        atexit.unregister(self.close)
