"""ACS3-HMAC-SHA256 verification against requests signed by the SDK's own signer.

``alibabacloud_tea_openapi.utils.Utils.get_authorization`` is what the FC 3.0 client calls; each
request here is signed by it, then sent through ``local.fc.acs3.verify`` as a server sees it
(values percent-encoded on the wire as the client's HTTP library sends them).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from alibabacloud_tea_openapi.utils import Utils
from darabonba.request import DaraRequest

from local.fc import acs3

KEYS = {"ak": "secret"}


def signed(body: bytes = b'{"a": 1}', query: dict[str, str] | None = None, when: float | None = None,
           pathname: str = "/2023-03-30/functions/my%20fn/invocations", **extra: str) -> dict[str, Any]:
    request = DaraRequest()
    request.method = "POST"
    request.pathname = pathname
    request.query = query or {}
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))
    request.headers = {"host": "127.0.0.1:9080", "x-acs-version": "2023-03-30", "x-acs-action": "InvokeFunction",
                       "x-acs-date": date, "x-acs-signature-nonce": uuid.uuid4().hex,
                       "accept": "application/json", "content-type": "application/octet-stream",
                       "x-fc-invocation-type": "Sync", **extra}
    payload = hashlib.sha256(body).hexdigest()
    request.headers["x-acs-content-sha256"] = payload
    authorization = Utils.get_authorization(request, "ACS3-HMAC-SHA256", payload, "ak", KEYS["ak"])
    wire_headers = {k.lower(): [v] for k, v in request.headers.items()}
    wire_headers["authorization"] = [authorization]
    return {"method": "POST", "raw_path": pathname, "raw_query": urlencode(request.query), "headers": wire_headers,
            "body": body}


def test_a_request_signed_by_the_sdk_verifies() -> None:
    request = signed(query={"qualifier": "LATEST x", "a+b": "c/d~e"})
    assert acs3.verify(**request, keys=KEYS) == "ak"


@pytest.mark.parametrize(("tamper", "code"), [
    (lambda r: r.update(body=b'{"a": 2}'), "SignatureNotMatch"),  # body changed, hash header kept
    (lambda r: r["headers"].update({"x-fc-invocation-type": ["Async"]}), "SignatureNotMatch"),
    (lambda r: r["headers"].update({"x-fc-log-type": ["Tail"]}), "SignatureNotMatch"),  # unsigned x-fc-* header
    (lambda r: r.update(raw_query="qualifier=prod"), "SignatureNotMatch"),
    (lambda r: r.update(raw_path="/2023-03-30/functions/other/invocations"), "SignatureNotMatch"),
    (lambda r: r["headers"].pop("authorization"), "MissingRequiredHeader"),
    (lambda r: r["headers"].update({"authorization": ["FC ak:abc"]}), "InvalidArgument"),
])
def test_tampered_requests_are_refused(tamper: Any, code: str) -> None:
    request = signed(query={"qualifier": "LATEST"})
    tamper(request)
    with pytest.raises(acs3.SignatureError) as caught:
        acs3.verify(**request, keys=KEYS)
    assert caught.value.code == code


def test_wrong_secret_and_unknown_key() -> None:
    with pytest.raises(acs3.SignatureError) as caught:
        acs3.verify(**signed(), keys={"ak": "other"})
    assert (caught.value.status, caught.value.code) == (403, "SignatureNotMatch")
    with pytest.raises(acs3.SignatureError) as caught:
        acs3.verify(**signed(), keys={"someone": "secret"})
    assert (caught.value.status, caught.value.code) == (403, "InvalidAccessKeyID")


def test_clock_skew_and_replay() -> None:
    with pytest.raises(acs3.SignatureError, match="15 minutes") as caught:
        acs3.verify(**signed(when=time.time() - 16 * 60), keys=KEYS)
    assert caught.value.code == "RequestTimeTooSkewed"
    nonces = acs3.NonceCache()
    request = signed()
    assert acs3.verify(**request, keys=KEYS, nonces=nonces) == "ak"
    with pytest.raises(acs3.SignatureError) as caught:
        acs3.verify(**request, keys=KEYS, nonces=nonces)
    assert caught.value.code == "SignatureNonceUsed"


def test_canonical_query_matches_the_sdk() -> None:
    from alibabacloud_tea_openapi.utils import get_canonical_query_string

    query = {"qualifier": "LATEST x", "b": "", "a+b": "c/d~e", "é": "ü"}
    assert acs3.canonical_query(urlencode(query)) == get_canonical_query_string(query)
