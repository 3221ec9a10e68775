"""ACS3-HMAC-SHA256, Alibaba Cloud's V3 request signature (the FC 3.0 API), checked server-side.

The canonical request is built as the SDK builds it (``alibabacloud_tea_openapi.utils``:
``get_authorization``, ``get_canonical_query_string``, ``get_canonicalized_headers``)::

    METHOD \\n path as sent \\n canonical query \\n canonical headers \\n signed header names \\n sha256(body) hex

- canonical query: the parameters sorted by name, ``name=value`` joined by ``&``, the name as is
  and the value percent-encoded with only ``~`` kept (RFC 3986);
- canonical headers: for each signed header (lower-case, sorted), ``name:value\\n``, several
  values of one name stripped, sorted and joined by ``,``;
- string to sign: ``ACS3-HMAC-SHA256\\n`` + hex(sha256(canonical request)); the signature is
  hex(HMAC-SHA256(secret, string to sign)), sent as
  ``Authorization: ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=a;b;c,Signature=<hex>``.

The signed headers must cover ``host``, ``x-acs-date``, ``x-acs-content-sha256`` and every
``x-acs-*`` / ``x-fc-*`` header the request carries; ``x-acs-content-sha256`` must be the body's
hash; ``x-acs-date`` within 15 minutes; a nonce (``x-acs-signature-nonce``) is used once.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, unquote_plus

ALGORITHM = "ACS3-HMAC-SHA256"
MAX_CLOCK_SKEW_S = 15 * 60
ALWAYS_SIGNED = ("host", "x-acs-date", "x-acs-content-sha256")


class SignatureError(Exception):
    """The request is not signed as it must be: an FC error (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Authorization:
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization:
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ALGORITHM:
        raise SignatureError(400, "InvalidArgument", f"the Authorization scheme must be {ALGORITHM}")
    fields = {}
    for part in rest.split(","):
        name, _, field_value = part.strip().partition("=")
        fields[name] = field_value
    if not all(fields.get(name) for name in ("Credential", "SignedHeaders", "Signature")):
        raise SignatureError(400, "InvalidArgument",
                             "Authorization must be 'ACS3-HMAC-SHA256 Credential=..,SignedHeaders=..,Signature=..'")
    return Authorization(fields["Credential"], tuple(fields["SignedHeaders"].split(";")), fields["Signature"])


def canonical_query(raw_query: str) -> str:
    parameters: dict[str, str] = {}
    for item in raw_query.split("&") if raw_query else []:
        name, _, value = item.partition("=")
        parameters[unquote_plus(name)] = unquote_plus(value)
    return "&".join(f"{name}={quote(parameters[name], safe='~')}" for name in sorted(parameters))


def canonical_headers(headers: Mapping[str, Sequence[str]], signed: Sequence[str]) -> str:
    lines = []
    for name in signed:
        values = sorted(v.strip() for v in headers.get(name, ()))
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def canonical_request(method: str, raw_path: str, raw_query: str, headers: Mapping[str, Sequence[str]],
                      signed: Sequence[str], payload_sha256: str) -> str:
    return "\n".join([method, raw_path or "/", canonical_query(raw_query), canonical_headers(headers, signed),
                      ";".join(signed), payload_sha256])


def signature(secret: str, canonical: str) -> str:
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
    return hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


class NonceCache:
    """Nonces seen within the clock-skew window: a replayed request is refused."""

    def __init__(self, window_s: float = MAX_CLOCK_SKEW_S) -> None:
        self.window_s = window_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, nonce: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {n: t for n, t in self._seen.items() if now - t < self.window_s}
            if nonce in self._seen and now - self._seen[nonce] < self.window_s:
                return False
            self._seen[nonce] = now
            return True


def _timestamp(value: str) -> float:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise SignatureError(400, "InvalidArgument", f"x-acs-date must be ISO 8601 UTC (2006-01-02T15:04:05Z), "
                                                     f"got {value!r}") from None


def verify(method: str, raw_path: str, raw_query: str, headers: Mapping[str, Sequence[str]], body: bytes,
           keys: Mapping[str, str], nonces: NonceCache | None = None, now: float | None = None) -> str:
    """The access key id of a correctly signed request; SignatureError otherwise.

    ``headers`` maps lower-case names to their values (a name may repeat).
    """
    authorization = (headers.get("authorization") or [""])[0]
    if not authorization:
        raise SignatureError(400, "MissingRequiredHeader", "required HTTP header Authorization was not specified")
    parsed = parse_authorization(authorization)
    if parsed.access_key_id not in keys:
        raise SignatureError(403, "InvalidAccessKeyID", f"invalid access key ID '{parsed.access_key_id}'")
    signed = list(parsed.signed_headers)
    if signed != sorted(signed) or any(name != name.lower() for name in signed):
        raise SignatureError(403, "SignatureNotMatch", "SignedHeaders must be lower-case and sorted")
    unsigned = [name for name in headers if name != "authorization" and name not in signed
                and (name in ALWAYS_SIGNED or name.startswith(("x-acs-", "x-fc-")))]
    missing = [name for name in ALWAYS_SIGNED if name not in headers]
    if missing or unsigned:
        raise SignatureError(403, "SignatureNotMatch",
                             f"headers {', '.join(missing + unsigned)} must be present and signed")
    moment = time.time() if now is None else now
    if abs(_timestamp(headers["x-acs-date"][0]) - moment) > MAX_CLOCK_SKEW_S:
        raise SignatureError(403, "RequestTimeTooSkewed", "x-acs-date is more than 15 minutes off the server's clock")
    payload = hashlib.sha256(body).hexdigest()
    if headers["x-acs-content-sha256"][0] != payload:
        raise SignatureError(403, "SignatureNotMatch", "x-acs-content-sha256 is not the hash of the body")
    expected = signature(keys[parsed.access_key_id],
                         canonical_request(method, raw_path, raw_query, headers, signed, payload))
    if not hmac.compare_digest(expected, parsed.signature):
        raise SignatureError(403, "SignatureNotMatch",
                             "The request signature we calculated does not match the signature you provided. "
                             "Check your access key and signing method")
    nonce = (headers.get("x-acs-signature-nonce") or [""])[0]
    if nonces is not None and nonce and not nonces.first_use(nonce, moment):
        raise SignatureError(403, "SignatureNonceUsed", f"the signature nonce {nonce} has been used")
    return parsed.access_key_id
