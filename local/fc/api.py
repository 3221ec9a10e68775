"""Function Compute's invoke APIs and HTTP triggers, locally, for the functions s.yaml declares.

- FC 3.0: ``POST /2023-03-30/functions/{function}/invocations[?qualifier=]``, signed
  ACS3-HMAC-SHA256 (``local.fc.acs3``); ``x-fc-invocation-type`` Sync or Async (202; with
  ``x-fc-async-task-id``), ``x-fc-log-type: Tail``; errors ``{"Code", "Message", "RequestId"}``.
- FC 2.0: ``POST /2016-08-15/services/{service}[.{qualifier}]/functions/{function}/invocations``,
  fc2's signature; errors ``{"ErrorCode", "ErrorMessage"}``.
- Both: Async runs in the background, retried on function error like FC's async invocation; a
  function error is a 200 with ``x-fc-error-type: UnhandledInvocationError`` and FC's error JSON;
  ``x-fc-log-result`` carries the log tail (base64). Any other API path, and any other
  ``/YYYY-MM-DD/`` API version, is a JSON error: never a request to a function.
- HTTP triggers: ``/2016-08-15/proxy/{service}/{function}/...`` (FC 2.0's form),
  ``/http/{function}/...``, and ``/...`` when exactly one function has an HTTP trigger.

Each function instance is a process started on first use: a built-in runtime function runs in a
``local.fc.worker``; a custom runtime (or container) function runs its own server on CAPort
(``CustomRuntimeWorker``), whose HTTP answers stream through.
"""

from __future__ import annotations

import base64
import email.utils
import hmac
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from local.fc import acs3
from local.fc.syaml import FunctionSpec, SYaml

API_VERSION = "2016-08-15"  # FC 2.0
FC3_API_VERSION = "2023-03-30"
_API_VERSION_SEGMENT = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SYNC_BODY_LIMIT = 32 * 1024 * 1024
LOG_TAIL_BYTES = 4096  # FC returns the last 4 KB of the invocation's log
ASYNC_BODY_LIMIT = 128 * 1024
MAX_CLOCK_SKEW_S = 15 * 60
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ACCESS_KEY_ID = "barrage-local"
DEFAULT_ACCESS_KEY_SECRET = "barrage-local-secret"  # a local-only default, printed at start


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Outcome:
    """What one invocation came to, as the worker answered it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    error: bool
    log_tail: str
    chunks: Iterator[bytes] | None = None  # a streamed answer (custom runtimes' HTTP requests)


@dataclass
class AsyncRecord:
    request_id: str
    function: str
    status: str = "Enqueued"  # Running, Retrying, Succeeded, Failed
    attempts: int = 0
    result: bytes = b""
    error: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)


class LoopbackProcess:
    """A function instance's process, answering HTTP on a loopback port."""

    process: subprocess.Popen[bytes] | None = None
    port = 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def request(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                timeout_s: float) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            answer = connection.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            connection.close()


class Worker(LoopbackProcess):
    """One function instance: a ``local.fc.worker`` process on a loopback port."""

    def __init__(self, spec: FunctionSpec, code_dir: Path, kind: str, env: Mapping[str, str], out: IO[str]) -> None:
        self.spec, self.code_dir, self.kind, self.env, self.out = spec, code_dir, kind, env, out
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout_s: float = 30.0) -> None:
        argv = [sys.executable, "-m", "local.fc.worker", "--code-dir", str(self.code_dir),
                "--handler", self.spec.handler, "--kind", self.kind]
        if self.spec.initializer:
            argv += ["--initializer", self.spec.initializer]
        self.process = subprocess.Popen(argv, env=dict(self.env), cwd=str(self.code_dir), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(self.process, ready), daemon=True).start()
        if not ready.wait(timeout_s) or not self.port:
            self.stop()
            raise ApiError(500, "FunctionNotStarted",
                           f"function {self.spec.name} did not start within {timeout_s:.0f} s")

    def _pump(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if not ready.is_set() and line.startswith("READY "):
                self.port = int(line.split()[1])
                ready.set()
                continue
            self.out.write(f"{self.spec.name:>18} | {line}\n")
            self.out.flush()
        ready.set()

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class CustomRuntimeWorker(LoopbackProcess):
    """A custom-runtime instance as FC runs one: the package's ``bootstrap`` (or the configured
    command) is started with ``CAPort`` set, and FC talks HTTP to the server it starts there.

    A custom container runs the image's entrypoint, ``python -m functions.entrypoint`` with
    ``WORKLOAD_CLASS=fc``, from the code directory (no container engine is needed locally).
    Lines the server prints between ``FC Invoke Start/End RequestId: <id>`` are that
    invocation's log tail.
    """

    def __init__(self, spec: FunctionSpec, code_dir: Path, env: Mapping[str, str], out: IO[str]) -> None:
        self.spec, self.code_dir, self.env, self.out = spec, code_dir, env, out
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.initialized = not spec.initializer
        self.init_lock = threading.Lock()
        self._open: dict[str, list[str]] = {}
        self._tails: OrderedDict[str, str] = OrderedDict()  # the latest ones; nobody asks for a stream's
        self._tails_changed = threading.Condition()

    def argv(self) -> list[str]:
        if self.spec.runtime == "custom-container":
            return [sys.executable, "-m", "functions.entrypoint"]
        # FC's code directory is /code; a command naming it means the same file here.
        command = [str(self.code_dir / c[len("/code/"):]) if c.startswith("/code/") else c
                   for c in self.spec.custom_runtime_command]
        return command or [str(self.code_dir / "bootstrap")]

    def start(self, timeout_s: float = 30.0) -> None:
        from local.supervisor import free_port

        argv = self.argv()
        if self.spec.runtime != "custom-container" and not os.access(argv[0], os.X_OK) and "/" in argv[0]:
            raise ApiError(412, "CAFileNotFound", f"function {self.spec.name}: {argv[0]} is missing or not executable")
        self.port = free_port()
        env = {k: v for k, v in self.env.items() if k not in ("FC_SERVER_PORT", "PORT")}
        # The interpreter of this project first: on FC the bootstrap finds the runtime's own Python.
        env.update({"CAPort": str(self.port), "HOST": "127.0.0.1",
                    "PATH": os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])})
        if self.spec.runtime == "custom-container":
            env["WORKLOAD_CLASS"] = "fc"
        try:
            self.process = subprocess.Popen(argv, env=env, cwd=str(self.code_dir), stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ApiError(412, "CAExited", f"function {self.spec.name} cannot be started: {exc}") from None
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ApiError(412, "CAExited", f"function {self.spec.name} exited with code "
                                                f"{self.process.returncode} before listening on CAPort {self.port}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ApiError(412, "FunctionNotStarted", f"function {self.spec.name} did not listen on CAPort {self.port} "
                                                  f"within {timeout_s:.0f} s")

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.out.write(f"{self.spec.name:>18} | {line}\n")
            self.out.flush()
            with self._tails_changed:
                if line.startswith("FC Invoke Start RequestId: "):
                    self._open[line.rsplit(" ", 1)[-1]] = []
                for lines in self._open.values():
                    lines.append(line)
                if line.startswith("FC Invoke End RequestId: "):
                    request_id = line.rsplit(" ", 1)[-1]
                    self._tails[request_id] = "\n".join(self._open.pop(request_id, [line])) + "\n"
                    while len(self._tails) > 256:
                        self._tails.popitem(last=False)
                    self._tails_changed.notify_all()

    def log_tail(self, request_id: str, wait_s: float = 1.0) -> str:
        """The invocation's lines (the server prints its End line around when it answers)."""
        with self._tails_changed:
            self._tails_changed.wait_for(lambda: request_id in self._tails, timeout=wait_s)
            return self._tails.pop(request_id, "")

    def open(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
             timeout_s: float) -> tuple[int, list[tuple[str, str]], Iterator[bytes]]:
        """The request, answered as the server writes it: each chunk as soon as it arrives."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            connection.request(method, path, body=body, headers=dict(headers))
            answer = connection.getresponse()
        except BaseException:
            connection.close()
            raise

        def chunks() -> Iterator[bytes]:
            try:
                while chunk := answer.read1(65536):
                    yield chunk
            except (OSError, http.client.HTTPException):
                return  # the instance went away mid-answer: the client sees the answer end
            finally:
                connection.close()

        return answer.status, answer.getheaders(), chunks()

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)  # the bootstrap's exec'd server and any children
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


Instance = Worker | CustomRuntimeWorker


class LocalFC:
    """The functions of one s.yaml behind FC's invoke APIs (3.0 and 2.0) and HTTP triggers."""

    def __init__(self, syaml: SYaml, code_dir: Path, keys: Mapping[str, str], service: str | None = None,
                 region: str = "cn-hangzhou", account_id: str = "1234567890", async_retry_delay_s: float = 1.0,
                 http_kinds: Mapping[str, str] | None = None, out: IO[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.syaml = syaml
        self.code_dir = code_dir.resolve()
        self.keys = dict(keys)
        self.service = service or syaml.name or "barrage"
        self.region, self.account_id = region, account_id
        self.async_retry_delay_s = async_retry_delay_s
        # fc3 built-in runtimes give HTTP functions the JSON event; "wsgi" selects FC 2.0's contract.
        self.http_kinds = dict(http_kinds or {})
        self.out = out or sys.stdout
        self.environ = dict(os.environ if environ is None else environ)
        self.async_records: dict[str, AsyncRecord] = {}
        self.async_tasks: dict[str, AsyncRecord] = {}  # FC 3.0's x-fc-async-task-id
        self.nonces = acs3.NonceCache()
        self._workers: dict[str, Instance] = {}
        self._lock = threading.Lock()

    # -- instances --------------------------------------------------------------------------

    def kind(self, spec: FunctionSpec) -> str:
        return self.http_kinds.get(spec.name, "http") if spec.is_http else "event"

    def _env(self, spec: FunctionSpec) -> dict[str, str]:
        pythonpath = [str(self.code_dir), str(REPO_ROOT), self.environ.get("PYTHONPATH", "")]
        return {
            **self.environ,
            **spec.environment,
            "FC_FUNCTION_NAME": spec.name,
            "FC_FUNCTION_HANDLER": spec.handler,
            "FC_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "FC_FUNC_CODE_PATH": str(self.code_dir),
            "FC_REGION": self.region,
            "FC_ACCOUNT_ID": self.account_id,
            "FC_SERVICE_NAME": self.service,
            "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
            "PYTHONUNBUFFERED": "1",
        }

    def worker(self, spec: FunctionSpec) -> Instance:
        with self._lock:
            worker = self._workers.get(spec.name)
            if worker is None or not worker.alive():
                worker = (CustomRuntimeWorker(spec, self.code_dir, self._env(spec), self.out) if spec.is_custom
                          else Worker(spec, self.code_dir, self.kind(spec), self._env(spec), self.out))
                worker.start()
                self._workers[spec.name] = worker
            return worker

    def discard(self, spec: FunctionSpec, worker: Instance) -> None:
        with self._lock:
            if self._workers.get(spec.name) is worker:
                del self._workers[spec.name]
        worker.stop()

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.stop()

    def context_headers(self, spec: FunctionSpec, request_id: str, retry_count: int, qualifier: str) -> dict[str, str]:
        headers = {
            "x-fc-request-id": request_id,
            "x-fc-function-name": spec.name,
            "x-fc-function-handler": spec.handler,
            "x-fc-function-memory": str(spec.memory),
            "x-fc-function-timeout": str(spec.timeout),
            "x-fc-service-name": self.service,
            "x-fc-service-logproject": "",
            "x-fc-service-logstore": "",
            "x-fc-qualifier": qualifier,
            "x-fc-version-id": "",
            "x-fc-region": self.region,
            "x-fc-account-id": self.account_id,
            "x-fc-retry-count": str(retry_count),
        }
        # The function role's STS keys: locally, whatever ALIBABA_CLOUD_* the server was given.
        for env_name, header in (("ALIBABA_CLOUD_ACCESS_KEY_ID", "x-fc-access-key-id"),
                                 ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "x-fc-access-key-secret"),
                                 ("ALIBABA_CLOUD_SECURITY_TOKEN", "x-fc-security-token")):
            if self.environ.get(env_name):
                headers[header] = self.environ[env_name]
        return {k: v for k, v in headers.items() if v}

    def call(self, spec: FunctionSpec, control: str, method: str, path: str, headers: Mapping[str, str],
             body: bytes, request_id: str, retry_count: int = 0, qualifier: str = "LATEST",
             stream: bool = False) -> Outcome:
        """One invocation through the function's worker; timeouts and crashes are function errors."""
        worker = self.worker(spec)
        context = self.context_headers(spec, request_id, retry_count, qualifier)
        if isinstance(worker, CustomRuntimeWorker) and not worker.initialized:
            failure = self._initialize(spec, worker, context)
            if failure is not None:
                return failure
        sent = {**headers, **context, "x-fc-control-path": control}
        chunks: Iterator[bytes] | None = None
        try:
            if stream and isinstance(worker, CustomRuntimeWorker):
                status, answer_headers, chunks = worker.open(method, path, sent, body, spec.timeout + 1.0)
                answer = b""
            else:
                status, answer_headers, answer = worker.request(method, path, sent, body, spec.timeout + 1.0)
        except TimeoutError:
            self.discard(spec, worker)  # FC replaces an instance that timed out
            return self._error(f"Function timed out after {spec.timeout} seconds", "FunctionTimeout", request_id)
        except (ConnectionError, http.client.HTTPException) as exc:
            self.discard(spec, worker)
            return self._error(f"the function instance exited: {exc}", "InstanceExited", request_id)
        failed = next((v for k, v in answer_headers if k.lower() == "x-fc-status"), "") == "404" and status == 404
        if failed and chunks is not None:
            answer, chunks = b"".join(chunks), None
        tail_header = next((v for k, v in answer_headers if k.lower() == "x-fc-log-result"), "")
        tail = base64.b64decode(tail_header).decode("utf-8", "replace") if tail_header else ""
        if isinstance(worker, CustomRuntimeWorker) and chunks is None:
            tail = worker.log_tail(request_id)
        kept = [(k, v) for k, v in answer_headers
                if k.lower() not in ("x-fc-status", "x-fc-log-result", "content-length", "date", "server",
                                     "connection", "transfer-encoding")]
        return Outcome(200 if failed else status, kept, answer, failed, tail, chunks)

    def _initialize(self, spec: FunctionSpec, worker: CustomRuntimeWorker,
                    context: Mapping[str, str]) -> Outcome | None:
        """FC's ``POST /initialize``, once per instance before its first invocation; None when it succeeded."""
        request_id = context["x-fc-request-id"]
        with worker.init_lock:
            if worker.initialized:
                return None
            headers = {**context, "x-fc-control-path": "/initialize", "Content-Type": "application/octet-stream"}
            try:
                status, _headers, answer = worker.request("POST", "/initialize", headers, b"",
                                                          spec.initializer_timeout + 1.0)
            except TimeoutError:
                self.discard(spec, worker)
                return self._error(f"Initializer timed out after {spec.initializer_timeout} seconds",
                                   "InitializationTimeout", request_id)
            except (ConnectionError, http.client.HTTPException) as exc:
                self.discard(spec, worker)
                return self._error(f"the function instance exited: {exc}", "InstanceExited", request_id)
            worker.log_tail(request_id, wait_s=0.2)
            if status != 200:
                # FC keeps the instance and runs the initializer again before the next invocation.
                try:
                    error = json.loads(answer)
                except ValueError:
                    error = {"errorMessage": answer.decode("utf-8", "replace")}
                message = str(error.get("errorMessage", "")) if isinstance(error, dict) else str(error)
                return self._error(message, "InitializationError", request_id)
            worker.initialized = True
        return None

    def _error(self, message: str, error_type: str, request_id: str) -> Outcome:
        document = {"errorMessage": message, "errorType": error_type, "stackTrace": []}
        tail = f"FC Invoke Start RequestId: {request_id}\n{message}\nFC Invoke End RequestId: {request_id}\n"
        return Outcome(200, [("Content-Type", "application/json")], json.dumps(document).encode(), True, tail)

    # -- async --------------------------------------------------------------------------------

    def run_async(self, spec: FunctionSpec, payload: bytes, request_id: str, qualifier: str) -> AsyncRecord:
        record = AsyncRecord(request_id, spec.name)
        self.async_records[request_id] = record

        def attempt_all() -> None:
            for attempt in range(spec.async_retries + 1):
                record.status, record.attempts = ("Running" if attempt == 0 else "Retrying"), attempt + 1
                try:
                    outcome = self.call(spec, "/invoke", "POST", "/invoke",
                                        {"Content-Type": "application/octet-stream"}, payload,
                                        request_id, retry_count=attempt, qualifier=qualifier)
                except ApiError as exc:
                    outcome = self._error(exc.message, exc.code, request_id)
                if not outcome.error:
                    record.status, record.result, record.error = "Succeeded", outcome.body, None
                    break
                record.error = json.loads(outcome.body or b"{}")
                if attempt < spec.async_retries:
                    # FC backs off between async retries; the base delay is configurable locally.
                    time.sleep(self.async_retry_delay_s * (2 ** attempt))
            else:
                record.status = "Failed"
            record.done.set()

        threading.Thread(target=attempt_all, name=f"async-{request_id}", daemon=True).start()
        return record


# -- the WSGI app -------------------------------------------------------------------------------


def _json_error(error: ApiError, request_id: str) -> Response:
    body = json.dumps({"ErrorCode": error.code, "ErrorMessage": error.message})
    return Response(body, status=error.status, content_type="application/json",
                    headers={"x-fc-request-id": request_id})


def _fc3_error(error: ApiError, request_id: str) -> Response:
    # FC 3.0 (and the SDK reading it) spell errors {"Code", "Message", "RequestId"}.
    body = json.dumps({"Code": error.code, "Message": error.message, "RequestId": request_id})
    return Response(body, status=error.status, content_type="application/json",
                    headers={"x-fc-request-id": request_id})


def _raw_target(request: Request) -> tuple[str, str]:
    """The path and query as the client sent them (percent-encoding kept: signatures cover it)."""
    raw = str(request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or "")
    if not raw:
        return quote(request.path), request.query_string.decode("latin-1")
    path, _, query = raw.partition("?")
    return path, query


def verify_signature(request: Request, keys: Mapping[str, str], signed_path: str,
                     queries: Mapping[str, list[str]] | None = None) -> None:
    """Checks an fc2 ``authorization: FC <AK>:<signature>`` header with fc2's own signer."""
    from fc2.auth import Auth

    authorization = request.headers.get("authorization", "")
    if not authorization:
        raise ApiError(400, "MissingRequiredHeader", "the authorization header is required")
    scheme, _, credential = authorization.partition(" ")
    key_id, _, signature = credential.partition(":")
    if scheme != "FC" or not key_id or not signature:
        raise ApiError(400, "InvalidArgument", "authorization must be 'FC <AccessKeyId>:<Signature>'")
    if key_id not in keys:
        raise ApiError(403, "InvalidAccessKeyId", f"the access key id {key_id} does not exist")
    date = request.headers.get("date", "")
    parsed = email.utils.parsedate_to_datetime(date) if date else None
    if parsed is None or abs(parsed.timestamp() - time.time()) > MAX_CLOCK_SKEW_S:
        raise ApiError(403, "RequestTimeTooSkewed", "the date header is missing or more than 15 minutes off")
    headers = {k.lower(): v for k, v in request.headers.items()}
    expected = Auth(key_id, keys[key_id], headers.get("x-fc-security-token", "")).sign_request(
        request.method, signed_path, headers, dict(queries) if queries is not None else None)
    if not hmac.compare_digest(expected, authorization):
        raise ApiError(403, "SignatureNotMatch", "the request signature does not match")


def create_api_app(fc: LocalFC) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    http_functions = [f for f in fc.syaml.functions if f.is_http]

    def lookup(service_part: str, function_name: str) -> tuple[FunctionSpec, str]:
        service, _, qualifier = service_part.partition(".")
        if service != fc.service:
            raise ApiError(404, "ServiceNotFound", f"service '{service}' does not exist")
        qualifier = qualifier or "LATEST"
        if qualifier != "LATEST":
            raise ApiError(404, "AliasNotFound", f"alias '{qualifier}' does not exist (locally only LATEST)")
        spec = fc.syaml.function(function_name)
        if spec is None:
            raise ApiError(404, "FunctionNotFound", f"function '{function_name}' does not exist in service "
                                                    f"'{service}'")
        return spec, qualifier

    def invocation(request: Request, request_id: str, service_part: str, function_name: str) -> Response:
        verify_signature(request, fc.keys, request.path)
        spec, qualifier = lookup(service_part, function_name)
        payload = request.get_data()
        mode = request.headers.get("x-fc-invocation-type", "Sync")
        if mode not in ("Sync", "Async"):
            raise ApiError(400, "InvalidArgument", f"x-fc-invocation-type must be Sync or Async, got {mode!r}")
        if mode == "Async":
            if len(payload) > ASYNC_BODY_LIMIT:
                raise ApiError(400, "InvalidArgument", f"an async payload holds at most {ASYNC_BODY_LIMIT} bytes")
            fc.run_async(spec, payload, request_id, qualifier)
            return Response(b"", status=202, headers={"x-fc-request-id": request_id})
        if len(payload) > SYNC_BODY_LIMIT:
            raise ApiError(400, "InvalidArgument", f"a sync payload holds at most {SYNC_BODY_LIMIT} bytes")
        outcome = fc.call(spec, "/invoke", "POST", "/invoke", {"Content-Type": "application/octet-stream"},
                          payload, request_id, qualifier=qualifier)
        response = Response(outcome.body, status=200, content_type="application/octet-stream")
        response.headers["x-fc-request-id"] = request_id
        if outcome.error:
            response.headers["x-fc-error-type"] = "UnhandledInvocationError"
            response.content_type = "application/json"
        if request.headers.get("x-fc-log-type") == "Tail":
            response.headers["x-fc-log-result"] = base64.b64encode(outcome.log_tail.encode("utf-8")).decode()
        return response

    def http_trigger(request: Request, request_id: str, spec: FunctionSpec, path: str,
                     signed_path: str | None = None) -> Response:
        trigger = spec.http_trigger
        if trigger is None:
            raise ApiError(404, "TriggerNotFound", f"function '{spec.name}' has no HTTP trigger")
        methods = [str(m).upper() for m in trigger.config.get("methods") or []]
        if methods and request.method not in methods:
            raise ApiError(403, "MethodNotAllowed", f"method {request.method} is not allowed by the HTTP trigger")
        if trigger.config.get("authType") == "function":
            verify_signature(request, fc.keys, signed_path or request.path, request.args.to_dict(flat=False))
        headers = {k: v for k, v in request.headers.items() if not k.lower().startswith("x-fc-")
                   and k.lower() not in ("authorization", "content-length", "host")}
        headers["x-forwarded-host"] = request.host
        headers["x-forwarded-for"] = request.remote_addr or "127.0.0.1"
        target = path + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
        # A custom runtime's answer streams through as its server writes it (Server-Sent Events);
        # the built-in runtime's handler returns the whole answer.
        outcome = fc.call(spec, "/http-invoke", request.method, target, headers, request.get_data(), request_id,
                          stream=spec.is_custom)
        if outcome.error:
            return Response(outcome.body, status=502, content_type="application/json",
                            headers={"x-fc-request-id": request_id, "x-fc-error-type": "UnhandledInvocationError"})
        response = Response(outcome.chunks if outcome.chunks is not None else outcome.body, status=outcome.status,
                            direct_passthrough=outcome.chunks is not None)
        response.headers.clear()
        for name, value in outcome.headers:
            response.headers.add(name, value)
        response.headers["x-fc-request-id"] = request_id
        return response

    def fc3_api(request: Request, request_id: str) -> Response:
        """``/2023-03-30/...``: signed ACS3-HMAC-SHA256; only InvokeFunction is served here."""
        raw_path, raw_query = _raw_target(request)
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        payload = request.get_data()
        try:
            acs3.verify(request.method, raw_path, raw_query, headers, payload, fc.keys, fc.nonces)
        except acs3.SignatureError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        parts = raw_path.split("/")  # split before decoding: a name may hold an encoded "/"
        if not (len(parts) == 5 and parts[2] == "functions" and parts[4] == "invocations"):
            raise ApiError(404, "PathNotSupported", f"'{request.method} {unquote(raw_path)}' is not supported "
                                                    "(the local FC 3.0 API serves InvokeFunction)")
        if request.method != "POST":
            raise ApiError(405, "MethodNotAllowed", "InvokeFunction takes POST")
        name = unquote(parts[3])
        spec = fc.syaml.function(name)
        if spec is None:
            raise ApiError(404, "FunctionNotFound", f"function '{name}' does not exist.")
        qualifier = request.args.get("qualifier") or "LATEST"
        if qualifier != "LATEST":
            if qualifier.isdigit():
                raise ApiError(404, "VersionNotFound", f"version '{qualifier}' of function '{name}' does not exist "
                                                       "(locally only LATEST)")
            raise ApiError(404, "AliasNotFound", f"alias '{qualifier}' of function '{name}' does not exist "
                                                 "(locally only LATEST)")
        mode = request.headers.get("x-fc-invocation-type", "Sync")
        if mode not in ("Sync", "Async"):
            raise ApiError(400, "InvalidArgument", f"x-fc-invocation-type must be Sync or Async, got {mode!r}")
        log_type = request.headers.get("x-fc-log-type", "None")
        if log_type not in ("None", "Tail"):
            raise ApiError(400, "InvalidArgument", f"x-fc-log-type must be None or Tail, got {log_type!r}")
        if mode == "Async":
            if len(payload) > ASYNC_BODY_LIMIT:
                raise ApiError(400, "EntityTooLarge", f"payload size exceeds maximum allowed size "
                                                      f"({ASYNC_BODY_LIMIT} bytes)")
            task_id = request.headers.get("x-fc-async-task-id", "")
            if task_id and task_id in fc.async_tasks:
                raise ApiError(409, "AsyncTaskAlreadyExists", f"async task '{task_id}' already exists")
            record = fc.run_async(spec, payload, request_id, qualifier)
            answer = Response(b"", status=202, headers={"x-fc-request-id": request_id})
            if task_id:
                fc.async_tasks[task_id] = record
                answer.headers["x-fc-async-task-id"] = task_id
            return answer
        if len(payload) > SYNC_BODY_LIMIT:
            raise ApiError(400, "EntityTooLarge",
                           f"payload size exceeds maximum allowed size ({SYNC_BODY_LIMIT} bytes)")
        outcome = fc.call(spec, "/invoke", "POST", "/invoke", {"Content-Type": "application/octet-stream"},
                          payload, request_id, qualifier=qualifier)
        response = Response(outcome.body, status=200, content_type="application/octet-stream")
        response.headers["x-fc-request-id"] = request_id
        response.headers["x-fc-invocation-function-version"] = qualifier
        if outcome.error:
            response.headers["x-fc-error-type"] = "UnhandledInvocationError"
            response.content_type = "application/json"
        if log_type == "Tail":
            tail = outcome.log_tail.encode("utf-8")[-LOG_TAIL_BYTES:]
            response.headers["x-fc-log-result"] = base64.b64encode(tail).decode()
        return response

    @Request.application
    def app(request: Request) -> Response:
        request_id = request.headers.get("x-fc-request-id") or str(uuid.uuid4())
        parts = request.path.split("/")
        if parts[1:2] == [FC3_API_VERSION]:
            try:
                return fc3_api(request, request_id)
            except ApiError as error:
                return _fc3_error(error, request_id)
        try:
            if len(parts) > 1 and _API_VERSION_SEGMENT.match(parts[1]) and parts[1] != API_VERSION:
                # An FC API call of a version not served here: an error, never a request to a function.
                raise ApiError(404, "PathNotSupported", f"API version {parts[1]} is not served here "
                                                        f"({FC3_API_VERSION} and {API_VERSION} are)")
            if parts[1:2] == [API_VERSION]:
                if (len(parts) == 7 and parts[2] == "services" and parts[4] == "functions"
                        and parts[6] == "invocations"):
                    if request.method != "POST":
                        raise ApiError(405, "MethodNotAllowed", "invocations take POST")
                    return invocation(request, request_id, parts[3], parts[5])
                if len(parts) >= 5 and parts[2] == "proxy":
                    spec, _ = lookup(parts[3], parts[4])
                    rest = "/" + "/".join(parts[5:])
                    return http_trigger(request, request_id, spec, rest, unquote(request.path))
                raise ApiError(404, "PathNotSupported", f"{request.method} {request.path} is not an FC API path here")
            if parts[1:2] == ["http"] and len(parts) >= 3:
                named = fc.syaml.function(parts[2])
                if named is None:
                    raise ApiError(404, "FunctionNotFound", f"function '{parts[2]}' does not exist")
                return http_trigger(request, request_id, named, "/" + "/".join(parts[3:]))
            if len(http_functions) == 1:
                return http_trigger(request, request_id, http_functions[0], request.path)
            raise ApiError(404, "PathNotSupported", "use /http/{function}/... to reach an HTTP function")
        except ApiError as error:
            return _json_error(error, request_id)

    return app


class LocalFCServer:
    """The API on a loopback port, served from a thread (tests, ``barrage fc serve``)."""

    def __init__(self, fc: LocalFC, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fc = fc
        self.server: BaseWSGIServer = make_server(host, port, create_api_app(fc), threaded=True)
        self.host, self.port = host, self.server.server_port
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalFCServer:
        self._thread = threading.Thread(target=self.server.serve_forever, name="local-fc", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.fc.close()

    def __enter__(self) -> LocalFCServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
