"""The emulator's HTTP front: Tablestore's request authentication and response signing.

Every request is checked as the service checks it (content MD5, API version, instance,
access key, optional STS token, date skew, HMAC-SHA1 signature); every response carries
the headers the SDK verifies (content MD5, request id, date, content type, Authorization).

Fault injection lives under ``/_emulator/faults`` (JSON, unauthenticated, loopback only):
``POST`` sets faults, ``GET`` shows them, ``DELETE`` clears them. ``POST /_emulator/clock``
with ``{"advance_ms": N}`` moves a ``ManualClock`` forward (for TTL tests in a subprocess).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import random
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import tablestore.protobuf.table_store_pb2 as pb2

from local.tablestore.api import Api, RowFaults
from local.tablestore.engine import HTTP_STATUS, Clock, Engine, ManualClock, OTSError, invalid

API_VERSION = "2015-12-31"
MAX_DATE_SKEW_S = 15 * 60
MAX_BODY_BYTES = 8 * 1024 * 1024
ADMIN_PREFIX = "/_emulator/"


@dataclass
class Credential:
    secret: str
    sts_token: str | None = None


@dataclass
class CallFaults:
    """Whole-call failures: the next ``count`` calls (of ``apis``, or any), then a random fraction."""

    count: int = 0
    code: str = "OTSServerBusy"
    apis: set[str] = field(default_factory=set)
    rate: float = 0.0
    rate_code: str = "OTSServerBusy"
    rate_apis: set[str] = field(default_factory=set)
    random: random.Random = field(default_factory=lambda: random.Random(0))
    injected: int = 0


class Faults:
    """What tests control: whole-call failures and row-level BatchWriteRow failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = CallFaults()
        self.rows = RowFaults()

    def fail_next(self, count: int, code: str = "OTSServerBusy", apis: list[str] | None = None) -> None:
        with self.lock:
            self.calls.count = count
            self.calls.code = code
            self.calls.apis = set(apis or ())

    def fail_fraction(self, rate: float, code: str = "OTSServerBusy", apis: list[str] | None = None) -> None:
        with self.lock:
            self.calls.rate = rate
            self.calls.rate_code = code
            self.calls.rate_apis = set(apis or ())

    def fail_rows(self, rate: float, code: str = "OTSServerBusy") -> None:
        with self.lock:
            self.rows.rate = rate
            self.rows.code = code

    def seed(self, seed: int) -> None:
        with self.lock:
            self.calls.random.seed(seed)
            self.rows.random.seed(seed + 1)

    def clear(self) -> None:
        with self.lock:
            injected = self.calls.injected
            self.calls = CallFaults(injected=injected)
            self.rows.rate = 0.0

    def next_call_error(self, api_name: str) -> OTSError | None:
        with self.lock:
            calls = self.calls
            if calls.count > 0 and (not calls.apis or api_name in calls.apis):
                calls.count -= 1
                calls.injected += 1
                return OTSError(calls.code, f"Injected failure ({calls.code}).")
            if calls.rate > 0 and (not calls.rate_apis or api_name in calls.rate_apis) \
                    and calls.random.random() < calls.rate:
                calls.injected += 1
                return OTSError(calls.rate_code, f"Injected failure ({calls.rate_code}).")
            return None

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {
                "fail_next": self.calls.count, "code": self.calls.code, "apis": sorted(self.calls.apis),
                "call_failure_rate": self.calls.rate, "call_failure_code": self.calls.rate_code,
                "row_failure_rate": self.rows.rate, "row_failure_code": self.rows.code,
                "injected_calls": self.calls.injected,
            }

    def configure(self, spec: dict[str, Any]) -> None:
        if "seed" in spec:
            self.seed(int(spec["seed"]))
        if "fail_next" in spec:
            self.fail_next(int(spec["fail_next"]), str(spec.get("code", "OTSServerBusy")), spec.get("apis"))
        if "call_failure_rate" in spec:
            self.fail_fraction(float(spec["call_failure_rate"]), str(spec.get("call_failure_code", "OTSServerBusy")),
                               spec.get("call_failure_apis"))
        if "row_failure_rate" in spec:
            self.fail_rows(float(spec["row_failure_rate"]), str(spec.get("row_failure_code", "OTSServerBusy")))


def _b64_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode()


def _hmac_sha1(secret: str, text: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()


def _canonical_headers(headers: dict[str, str], exclude: str = "") -> str:
    items = [f"{k}:{v.strip()}" for k, v in headers.items() if k.startswith("x-ots-") and k != exclude]
    return "\n".join(sorted(items))


def _wall_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class TablestoreEmulator:
    """An in-process Tablestore: ``start()`` serves on 127.0.0.1, ``endpoint`` is the URL to use."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        instance: str = "barrage",
        access_key_id: str = "emulator-key",
        access_key_secret: str = "emulator-secret",
        sts_token: str | None = None,
        data_file: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.instance = instance
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.credentials: dict[str, Credential] = {access_key_id: Credential(access_key_secret, sts_token)}
        self.clock = clock
        self.engine = Engine(clock=clock, data_file=data_file)
        self.faults = Faults()
        self.api = Api(self.engine, self.faults.rows)
        self.requests_served = 0
        self._counter_lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}"

    def add_credential(self, access_key_id: str, secret: str, sts_token: str | None = None) -> None:
        self.credentials[access_key_id] = Credential(secret, sts_token)

    def start(self) -> TablestoreEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="tablestore-emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.engine.close()

    def __enter__(self) -> TablestoreEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- request processing ------------------------------------------------------------

    def authenticate(self, api_name: str, headers: dict[str, str], body: bytes) -> Credential:
        for name in ("x-ots-date", "x-ots-apiversion", "x-ots-instancename", "x-ots-contentmd5"):
            if name not in headers:
                raise OTSError("OTSMissingHeader", f"Missing header: {name}.")
        key_id = headers.get("x-ots-accesskeyid")
        signature = headers.get("x-ots-signature")
        if not key_id or not signature:
            raise OTSError("OTSAuthFailed", "Missing access key id or signature (V4 signing is not supported).")
        if headers["x-ots-contentmd5"] != _b64_md5(body):
            raise invalid("Content MD5 of the request body does not match x-ots-contentmd5.")
        if headers["x-ots-apiversion"] != API_VERSION:
            raise invalid(f"Unsupported API version: {headers['x-ots-apiversion']}.")
        credential = self.credentials.get(key_id)
        if credential is None:
            raise OTSError("OTSAuthFailed", "The AccessKeyID does not exist.")
        if headers["x-ots-instancename"] != self.instance:
            raise OTSError("OTSAuthFailed", f"Instance not found: {headers['x-ots-instancename']}.")
        if credential.sts_token is not None and headers.get("x-ots-ststoken") != credential.sts_token:
            raise OTSError("OTSAuthFailed", "The STS token is missing or invalid.")
        if credential.sts_token is None and "x-ots-ststoken" in headers:
            raise OTSError("OTSAuthFailed", "An STS token was sent for a permanent access key.")
        try:
            sent = datetime.datetime.strptime(headers["x-ots-date"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc)
        except ValueError as exc:
            raise invalid("Invalid x-ots-date.") from exc
        if abs((_wall_now() - sent).total_seconds()) > MAX_DATE_SKEW_S:
            raise OTSError("OTSAuthFailed", "Request date is more than 15 minutes away from server time.")
        expected = _hmac_sha1(
            credential.secret, f"/{api_name}\nPOST\n\n{_canonical_headers(headers, 'x-ots-signature')}\n")
        if not hmac.compare_digest(expected, signature):
            raise OTSError("OTSAuthFailed", "Signature mismatch.")
        return credential

    def handle(self, api_name: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str | None]:
        """Status, body and the secret to sign the response with (None: cannot sign)."""
        with self._counter_lock:
            self.requests_served += 1
        try:
            credential = self.authenticate(api_name, headers, body)
        except OTSError as exc:
            known = self.credentials.get(headers.get("x-ots-accesskeyid", ""))
            secret = known.secret if known is not None and exc.code != "OTSAuthFailed" else None
            return exc.status, _error_body(exc), secret
        try:
            injected = self.faults.next_call_error(api_name)
            if injected is not None:
                raise injected
            return 200, self.api.call(api_name, body), credential.secret
        except OTSError as exc:
            return exc.status, _error_body(exc), credential.secret
        except Exception as exc:  # a bug in the emulator must still reach the client as an error
            error = OTSError("OTSInternalServerError", f"Emulator error: {type(exc).__name__}: {exc}")
            return error.status, _error_body(error), credential.secret

    def admin(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            spec = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "body must be JSON"}
        if path == ADMIN_PREFIX + "faults":
            if method == "POST":
                self.faults.configure(spec)
            elif method == "DELETE":
                self.faults.clear()
            return 200, self.faults.describe()
        if path == ADMIN_PREFIX + "clock" and method == "POST":
            if not isinstance(self.clock, ManualClock):
                return 409, {"error": "the emulator runs on the wall clock"}
            self.clock.advance(int(spec.get("advance_ms", 0)))
            return 200, {"now_ms": self.clock.now_ms()}
        return 404, {"error": f"no admin endpoint {method} {path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in one segment; otherwise Nagle and delayed ACKs stall
            # small keep-alive responses by ~40 ms each.
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # tests and benchmarks make thousands of calls

            def _body(self) -> bytes | None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._send_raw(413, b"", {})
                    return None
                return self.rfile.read(length)

            def _send_raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def _admin(self, method: str) -> None:
                body = self._body()
                if body is None:
                    return
                status, payload = emulator.admin(method, self.path, body)
                self._send_raw(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

            def do_GET(self) -> None:
                if self.path.startswith(ADMIN_PREFIX):
                    self._admin("GET")
                    return
                self._send_raw(405, b"", {})

            def do_DELETE(self) -> None:
                if self.path.startswith(ADMIN_PREFIX):
                    self._admin("DELETE")
                    return
                self._send_raw(405, b"", {})

            def do_POST(self) -> None:
                if self.path.startswith(ADMIN_PREFIX):
                    self._admin("POST")
                    return
                body = self._body()
                if body is None:
                    return
                api_name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, secret = emulator.handle(api_name, headers, body)
                self._send_raw(status, payload, _response_headers(api_name, payload, secret,
                                                                   headers.get("x-ots-accesskeyid", "")))

        return Handler


def _error_body(error: OTSError) -> bytes:
    message = pb2.Error()
    message.code = error.code
    message.message = error.message
    return bytes(message.SerializeToString())


def _response_headers(api_name: str, body: bytes, secret: str | None, key_id: str) -> dict[str, str]:
    headers = {
        "x-ots-contentmd5": _b64_md5(body),
        "x-ots-requestid": uuid.uuid4().hex,
        "x-ots-date": _wall_now().strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "x-ots-contenttype": "protocol buffer",
    }
    if secret is not None:
        signature = _hmac_sha1(secret, f"{_canonical_headers(headers)}\n/{api_name}")
        headers["Authorization"] = f"OTS {key_id}:{signature}"
    return headers


__all__ = ["HTTP_STATUS", "Faults", "TablestoreEmulator"]
