"""``barrage up --app``: the orders example's whole local topology from its declaration alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from local.supervisor import free_port
from tests.e2e.stack_support import ROOT, request_json
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_orders_run_locally_with_one_command(tmp_path: Path) -> None:
    port, broker = free_port(), free_port()
    while broker in (port, port + 1):
        broker = free_port()
    env = {**os.environ, "ORDERS_DB": str(tmp_path / "totals.db"), "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_SERVER", None)
    log = tmp_path / "up.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "local.cli", "up", "--app", "examples.orders.deploy", "--port", str(port),
         "--broker-port", str(broker), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), 90, "the orders stack to be up")
        intake = f"http://127.0.0.1:{port}"
        for n in range(5):
            order = {"id": f"o{n}", "customer": "acme", "lines": [{"sku": "x", "quantity": 1, "price_cents": 10}]}
            status, body = request_json(f"{intake}/orders", order)
            assert status == 202, body
        assert request_json(f"{intake}/orders", {"id": "bad"})[0] == 400

        def totalled() -> bool:
            return request_json(f"{intake}/customers/acme")[1]["orders"] == 5  # type: ignore[no-any-return]

        wait_for(totalled, 60, "five orders totalled through the broker and the dispatcher")
        assert request_json(f"{intake}/customers/acme")[1] == {"customer": "acme", "orders": 5, "total_cents": 50}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert process.returncode == 0, log.read_text()[-2000:]
