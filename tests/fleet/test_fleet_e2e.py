"""The fleet end to end, every part a real process: nats-server, host relays ``a`` and ``b``
with their targets, and fleet gateways, talking over real TLS sockets (see fleet_support.py).

One fleet serves the whole module; the tests run in file order, and each one that breaks
something (NATS, a gateway, a host relay) puts it back before it ends, the host kill last.
The measured fault transitions are written to ``test-output/fleet-faults.json`` for the docs;
no test asserts on how long anything took.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fleet_support import GATEWAYS, LOCAL_TARGET, Fleet, wait_message  # noqa: E402
from relay_helpers import close_ws, make_pki  # noqa: E402
from supervisor.fleet.nats import NatsBus  # noqa: E402
from tests.waiting import eventually  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAULTS_PATH = os.path.join(REPO, "test-output", "fleet-faults.json")
FLEET_IDS = [f"a/{LOCAL_TARGET}", f"b/{LOCAL_TARGET}"]
WAIT = 30.0


@pytest.fixture(scope="module")
def fleet() -> Any:
    """nats-server, host relays a and b with one target each, and the first gateway."""
    root = os.path.realpath(tempfile.mkdtemp(prefix="fe2e", dir="/tmp"))
    pki_dir = os.path.join(root, "pki")
    os.makedirs(pki_dir)
    fleet = Fleet(root, make_pki(pki_dir))
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        if fleet.faults:
            fleet.write_faults(FAULTS_PATH)
        shutil.rmtree(root, ignore_errors=True)


def listed(ws: Any, message: dict[str, Any]) -> bool:
    """A target_list holding both hosts' targets."""
    return (message.get("type") == "target_list"
            and {t["target_id"] for t in message["targets"]} >= set(FLEET_IDS))


def connection(target_id: str, state: str) -> Any:
    return lambda m: (m.get("type") == "connection_state" and m.get("target_id") == target_id
                      and m.get("state") == state)


def state_of(target_id: str) -> Any:
    return lambda m: m.get("type") == "state" and m.get("target_id") == target_id


async def fleet_listed(fleet: Fleet, ws: Any) -> dict[str, Any]:
    """The first target_list with both hosts' targets (earlier ones may predate a registry)."""
    try:
        return await wait_message(ws, lambda m: listed(ws, m), WAIT, "both hosts listed")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{fleet.logs()}") from None


async def both_states(fleet: Fleet, ws: Any) -> None:
    for target_id in FLEET_IDS:
        try:
            await wait_message(ws, state_of(target_id), WAIT, f"state of {target_id}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{fleet.logs()}") from None


def audit_rows(path: str) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY seq")]


@pytest_twisted.ensureDeferred
async def test_targets_bind_only_while_a_gateway_session_watches(fleet):
    host = fleet.hosts["b"]
    # no gateway session yet: the host knows its target but keeps no IPC link to it
    assert host.registered() == 1, fleet.logs()
    await eventually(lambda: host.ipc_connections() == 0, WAIT, "no IPC client of b's target")
    assert host.metric("fleet_host_bound") == 0
    assert host.metric("relay_targets_bound") == 0
    ws = await fleet.gateway_session()
    await fleet_listed(fleet, ws)
    await both_states(fleet, ws)
    await eventually(lambda: host.metric("fleet_host_bound") == 1, WAIT, "b bound for the gateway")
    assert host.ipc_connections() == 1
    await close_ws(ws)
    # the session left: the gateway stops renewing, the lease runs out, the link closes
    await eventually(lambda: host.metric("fleet_host_bound") == 0, WAIT, "b unbound")
    await eventually(lambda: host.ipc_connections() == 0, WAIT, "b's target IPC closed")


@pytest_twisted.ensureDeferred
async def test_a_gateway_session_lists_and_streams_both_hosts_targets(fleet):
    ws = await fleet.gateway_session()
    message = await fleet_listed(fleet, ws)
    rows = {t["target_id"]: t for t in message["targets"]}
    assert rows[f"a/{LOCAL_TARGET}"]["host_id"] == "a"
    assert rows[f"b/{LOCAL_TARGET}"]["host_id"] == "b"
    for target_id in FLEET_IDS:
        state = await wait_message(ws, state_of(target_id), WAIT, f"state of {target_id}")
        assert state["state"]["target"]["target_id"] == target_id
        paths = [r["child_path"] for r in state["state"]["runtime_state"]]
        assert paths == ["/root/worker"]
    await close_ws(ws)


@pytest_twisted.ensureDeferred
async def test_a_command_is_audited_at_the_gateway_and_at_the_host(fleet):
    ws = await fleet.gateway_session()
    await fleet_listed(fleet, ws)
    await both_states(fleet, ws)
    target_id = f"b/{LOCAL_TARGET}"
    ws.send({"type": "command", "command_id": "e2e-restart", "correlation_id": None,
             "target_id": target_id, "command": "restart_child",
             "target": {"child_path": "/root/worker"}, "reason": "e2e check",
             "confirmed": False})
    result = await wait_message(ws, lambda m: m.get("type") == "command_result", WAIT,
                                "command_result")
    assert result["result"]["status"] == "completed", result
    audited = await wait_message(ws, lambda m: m.get("type") == "audit_event"
                                 and m.get("target_id") == target_id, WAIT, "audit_event")
    assert audited["target_id"] == target_id
    await close_ws(ws)

    def gateway_rows() -> list[dict[str, Any]]:
        return [r for r in audit_rows(fleet.gateways[GATEWAYS[0]].audit_path)
                if r["command_id"] == "e2e-restart"]

    def host_rows() -> list[dict[str, Any]]:
        return [r for r in audit_rows(fleet.hosts["b"].audit_path)
                if r["command_id"] == "e2e-restart"]

    await eventually(lambda: [r["result"] for r in gateway_rows()] == ["accepted", "completed"],
                     WAIT, "gateway audit")
    await eventually(lambda: [r["result"] for r in host_rows()] == ["accepted", "completed"],
                     WAIT, "host b audit")
    for row in gateway_rows() + host_rows():
        assert row["principal"] == "CN=demo operator"
        assert row["reason"] == "e2e check"
    for row in host_rows():
        assert row["session_id"].startswith("fleet:")
        assert row["target_id"] == LOCAL_TARGET
        assert fleet.gateways[GATEWAYS[0]].principal in row["detail"]
    assert not [r for r in audit_rows(fleet.hosts["a"].audit_path)
                if r["command_id"] == "e2e-restart"]


@pytest_twisted.ensureDeferred
async def test_a_host_certificate_cannot_publish_as_another_host(fleet):
    nats = fleet.nats
    impostor = NatsBus(nats.host_config("a"), reactor, "impostor-a")
    probe = NatsBus(nats.gateway_config(GATEWAYS[0]), reactor, "probe")
    heard: list[str] = []
    impostor.start()
    probe.start()
    try:
        await impostor.when_connected()
        await probe.when_connected()
        subscription = probe.subscribe("fleet.host.>", lambda m: heard.append(m.subject))
        try:
            def heard_once(subject: str) -> bool:
                if subject in heard:
                    return True
                impostor.publish(subject, b"{}")
                return False

            # what host a may publish reaches the probe: its subscription is in place
            await eventually(lambda: heard_once("fleet.host.a.stream.e2e-ready"), WAIT,
                             "probe subscribed", interval=0.2)
            forged = (b'{"host_id": "b", "instance_id": "x", "generation": 1, "targets": '
                      b'[{"target_id": "b/forged", "host_id": "b", "display_name": "forged", '
                      b'"registration_state": "active", "connection_state": "registered"}]}')
            heard.clear()
            impostor.publish("fleet.host.b.registry", forged)
            await eventually(lambda: impostor.permission_violations >= 1, WAIT,
                             "the server refuses the impostor")
            # a message the impostor may send, after the refused one on the same connection:
            # once it arrives, the refused one would have arrived before it
            impostor.publish("fleet.host.a.stream.e2e-barrier", b"{}")
            await eventually(lambda: "fleet.host.a.stream.e2e-barrier" in heard, WAIT, "barrier")
            assert "fleet.host.b.registry" not in heard[:heard.index(
                "fleet.host.a.stream.e2e-barrier")]
        finally:
            subscription.unsubscribe()
    finally:
        await impostor.stop()
        await probe.stop()
    ws = await fleet.gateway_session()
    message = await wait_message(ws, lambda m: m.get("type") == "target_list", WAIT,
                                 "target_list")
    assert "b/forged" not in {t["target_id"] for t in message["targets"]}
    await close_ws(ws)


@pytest_twisted.ensureDeferred
async def test_nats_down_makes_targets_unavailable_until_it_returns(fleet):
    ws = await fleet.gateway_session()
    await fleet_listed(fleet, ws)
    await both_states(fleet, ws)
    host_a = fleet.hosts["a"]
    local = await fleet.session(host_a.https_port)
    await wait_message(local, lambda m: m.get("type") == "target_list", WAIT, "local list")
    await wait_message(local, state_of(LOCAL_TARGET), WAIT, "local state")
    ws.messages.clear()
    down = time.monotonic()
    await deferToThread(fleet.nats.stop)
    for target_id in FLEET_IDS:
        await wait_message(ws, connection(target_id, "unavailable"), WAIT,
                           f"{target_id} unavailable")
    fleet.faults["nats_down_to_unavailable_seconds"] = time.monotonic() - down
    # the host relay's own dashboard keeps working without NATS
    local.messages.clear()
    local.send({"type": "command", "command_id": "e2e-local", "correlation_id": None,
                "target_id": LOCAL_TARGET, "command": "restart_child",
                "target": {"child_path": "/root/worker"}, "reason": "nats is down",
                "confirmed": False})
    result = await wait_message(local, lambda m: m.get("type") == "command_result", WAIT,
                                "local command_result")
    assert result["result"]["status"] == "completed", result
    await wait_message(local, lambda m: m.get("type") == "event"
                       and m.get("target_id") == LOCAL_TARGET, WAIT, "local event")
    back = time.monotonic()
    await deferToThread(fleet.nats.start)
    for target_id in FLEET_IDS:
        await wait_message(ws, connection(target_id, "connected"), WAIT,
                           f"{target_id} connected again")
    fleet.faults["nats_back_to_connected_seconds"] = time.monotonic() - back
    await close_ws(local)
    await close_ws(ws)


@pytest_twisted.ensureDeferred
async def test_a_restarted_gateway_serves_the_fleet_again(fleet):
    gateway = fleet.gateways[GATEWAYS[0]]
    ws = await fleet.gateway_session()
    await fleet_listed(fleet, ws)
    await deferToThread(gateway.stop)
    await eventually(lambda: ws.closed_d.called, WAIT, "session closed by the stop")
    restart = time.monotonic()
    await deferToThread(gateway.start)
    again = await fleet.gateway_session()
    await fleet_listed(fleet, again)
    fleet.faults["gateway_restart_to_full_target_list_seconds"] = time.monotonic() - restart
    await both_states(fleet, again)
    await close_ws(again)


@pytest_twisted.ensureDeferred
async def test_two_gateways_serve_the_fleet_at_once(fleet):
    second = fleet.gateways[GATEWAYS[1]]
    await deferToThread(second.start)
    try:
        first_ws = await fleet.gateway_session(GATEWAYS[0])
        second_ws = await fleet.gateway_session(GATEWAYS[1])
        for ws in (first_ws, second_ws):
            await fleet_listed(fleet, ws)
            await both_states(fleet, ws)
        second_ws.send({"type": "command", "command_id": "e2e-second", "correlation_id": None,
                        "target_id": f"a/{LOCAL_TARGET}", "command": "restart_child",
                        "target": {"child_path": "/root/worker"}, "reason": "second gateway",
                        "confirmed": False})
        result = await wait_message(second_ws, lambda m: m.get("type") == "command_result",
                                    WAIT, "command_result via the second gateway")
        assert result["result"]["status"] == "completed", result
        await close_ws(first_ws)
        await close_ws(second_ws)
    finally:
        await deferToThread(second.stop)


@pytest_twisted.ensureDeferred
async def test_a_killed_host_relay_makes_its_targets_unavailable(fleet):
    ws = await fleet.gateway_session()
    await fleet_listed(fleet, ws)
    await both_states(fleet, ws)
    ws.messages.clear()
    host = fleet.hosts["b"]
    killed = time.monotonic()
    await deferToThread(host.relay.stop, signal.SIGKILL)
    await wait_message(ws, connection(f"b/{LOCAL_TARGET}", "unavailable"), WAIT,
                       "b's target unavailable")
    fleet.faults["host_kill_to_unavailable_seconds"] = time.monotonic() - killed
    assert not [m for m in ws.messages if connection(f"a/{LOCAL_TARGET}", "unavailable")(m)]
    await close_ws(ws)
