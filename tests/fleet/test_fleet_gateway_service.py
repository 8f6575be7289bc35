"""The gateway as a service on the real reactor: real TLS and a wss:// session with a client
certificate, the audit store on disk, scripted hosts on a MemoryBus (the real NATS bus is
tested with nats-server on its own)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "relay"))

from gateway_fakehost import FakeHost  # noqa: E402
from relay_helpers import close_ws, connect_ws, make_pki  # noqa: E402
from supervisor.config.gateway import parse_gateway_config  # noqa: E402
from supervisor.fleet.bus import MemoryNetwork  # noqa: E402
from supervisor.fleet.service import GatewayService  # noqa: E402
from supervisor.fleet.subjects import gateway_token  # noqa: E402

PRINCIPAL = "CN=fleet-gateway, O=Supervisor Demo"


@pytest.fixture(scope="module")
def pki() -> Any:
    path = tempfile.mkdtemp(prefix="gwpki", dir="/tmp")
    yield make_pki(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir() -> Any:
    path = tempfile.mkdtemp(prefix="gw", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def config(pki: Any, workdir: str) -> Any:
    return parse_gateway_config({
        "listen": {"bind": "127.0.0.1:0", "public_url": "wss://localhost:9443/supervisor"},
        "tls": {"certificate_path": pki.server_cert_path,
                "private_key_path": pki.server_key_path, "client_ca_path": pki.ca_path},
        "authorization": {"operators": [{"principal": "CN=demo operator", "commands": "all"}]},
        "audit": {"path": os.path.join(workdir, "audit.sqlite3")},
        "nats": {"servers": ["tls://127.0.0.1:4222"],
                 "tls": {"ca_path": pki.ca_path, "certificate_path": pki.server_cert_path,
                         "private_key_path": pki.server_key_path}},
    }, workdir)


@pytest_twisted.ensureDeferred
async def test_a_wss_session_sees_a_hosts_targets_and_commands_them(pki, workdir):
    network = MemoryNetwork(reactor)
    bus = network.client("gateway", publish=(f"fleet.rpc.*.{gateway_token(PRINCIPAL)}",))
    host = FakeHost(network.client("alpha", publish=("fleet.host.alpha.>",)), reactor, "alpha",
                    ["web"], trusted=(PRINCIPAL,))
    service = GatewayService(config(pki, workdir), reactor, bus=bus, principal=PRINCIPAL)
    service.startService()
    ws = None
    try:
        ws = await connect_ws(service.https_port, pki, pki.operator)
        hello = await ws.next("server_hello")
        assert hello["principal"] == "CN=demo operator"
        ws.send({"type": "client_hello", "client_store_id": "s", "resume_cursor": {}})
        while True:  # the first list may come before the host's registry was read
            listed = await ws.next("target_list")
            if listed["targets"]:
                break
        assert [(t["target_id"], t["host_id"]) for t in listed["targets"]] == [
            ("alpha/web", "alpha")]
        state = await ws.next("state", target_id="alpha/web")
        assert state["state"]["target"]["target_id"] == "alpha/web"
        ws.send({"type": "command", "command_id": "c-1", "correlation_id": None,
                 "target_id": "alpha/web", "command": "restart_child",
                 "target": {"child_path": "/root/w"}, "reason": "stuck", "confirmed": False})
        result = await ws.next("command_result")
        assert result["result"]["status"] == "completed"
        [forwarded] = host.of_op("command")
        assert forwarded["operator"]["principal"] == "CN=demo operator"
        assert forwarded["operator"]["source"] == "mtls"
    finally:
        if ws is not None:
            await close_ws(ws)
        host.stop_heartbeats()
        await service.stopService()
    with sqlite3.connect(os.path.join(workdir, "audit.sqlite3")) as db:
        rows = db.execute("SELECT result FROM audit ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == ["accepted", "completed"]
