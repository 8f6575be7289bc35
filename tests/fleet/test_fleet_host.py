"""The host relay's fleet side in memory: a RelayHub with memory targets (tests/relay/
relay_memory.py), a FleetHost on a MemoryBus, requests sent as a gateway sends them, one
fake clock."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "relay"))

from relay_memory import OPERATOR, MemoryRelay  # noqa: E402
from supervisor.config.fleet import FleetConfig  # noqa: E402
from supervisor.fleet.bus import BusMessage, MemoryNetwork  # noqa: E402
from supervisor.fleet.host import (MAX_GATEWAY_INSTANCES, MAX_IN_FLIGHT,  # noqa: E402
                                   REGISTRY_INTERVAL_SECONDS, FleetHost)
from supervisor.fleet.subjects import (heartbeat_subject, registry_subject, rpc_subject,  # noqa: E402
                                       stream_subject)
from supervisor.wire.ndjson import encode  # noqa: E402

GATEWAY = "CN=fleet-gateway, O=Supervisor Fleet"
TARGET = "payments-worker-a"


class Fleet:
    """One relay on host ``h1`` in a fleet, and a gateway's client of the same network."""

    def __init__(self, **fleet: Any) -> None:
        self.relay = MemoryRelay()
        self.clock = self.relay.clock
        self.network = MemoryNetwork(self.clock)
        self.host_bus = self.network.client("host-h1", publish=("fleet.host.h1.>",))
        self.gateway = self.network.client("gateway")
        config = FleetConfig(enabled=True, host_id="h1", trusted_gateways=(GATEWAY,),
                             **fleet)
        self.host = FleetHost(self.relay.hub, self.host_bus, config, clock=self.clock,
                              instance_id="host-instance")
        self.heard: list[BusMessage] = []
        self.gateway.subscribe("fleet.host.h1.>", self.heard.append)
        self.host.start()
        self.relay.settle()

    def of(self, subject: str) -> list[dict[str, Any]]:
        return [json.loads(m.data) for m in self.heard if m.subject == subject]

    def send(self, op: str, principal: str = GATEWAY, subject_principal: str | None = None,
             instance: str = "gw-1", **fields: Any) -> list[bytes]:
        """Send one request; the list its reply is appended to."""
        request = {"op": op, "gateway_principal": principal, "gateway_instance": instance,
                   **fields}
        d = self.gateway.request(rpc_subject("h1", subject_principal or principal),
                                 encode(request), 60)
        replies: list[bytes] = []
        d.addCallback(replies.append)
        return replies

    def ask(self, op: str, **options: Any) -> dict[str, Any]:
        replies = self.send(op, **options)
        for _ in range(20):
            self.relay.settle()
            if replies:
                break
        assert replies, f"no reply to {op}"
        return json.loads(replies[0])

    def stop(self) -> None:
        self.host.stop()


@pytest.fixture
def fleet() -> Any:
    f = Fleet()
    yield f
    f.stop()


def test_heartbeats_name_the_instance_and_registry_generation(fleet: Fleet) -> None:
    beats = fleet.of(heartbeat_subject("h1"))
    assert beats and beats[0]["host_id"] == "h1"
    assert beats[0]["instance_id"] == "host-instance"
    before = beats[-1]["generation"]
    fleet.relay.register(fleet.relay.target(TARGET))
    fleet.relay.settle(REGISTRY_INTERVAL_SECONDS)
    fleet.relay.settle(fleet.host.config.heartbeat_ms / 1000.0)
    assert fleet.of(heartbeat_subject("h1"))[-1]["generation"] > before


def test_the_registry_lists_targets_under_fleet_ids_coalesced(fleet: Fleet) -> None:
    for n in range(3):
        fleet.relay.register(fleet.relay.target(f"worker-{n}"))
    fleet.relay.settle(REGISTRY_INTERVAL_SECONDS)
    registries = fleet.of(registry_subject("h1"))
    assert registries, "a change is published"
    last = registries[-1]
    assert [t["target_id"] for t in last["targets"]] == ["h1/worker-0", "h1/worker-1",
                                                         "h1/worker-2"]
    assert {t["host_id"] for t in last["targets"]} == {"h1"}
    assert len(registries) <= 2, "three registrations in one burst are coalesced"
    asked = fleet.ask("registry")
    assert asked["ok"] and asked["result"]["generation"] == last["generation"]


def test_untrusted_or_forged_gateways_are_refused(fleet: Fleet) -> None:
    fleet.relay.register(fleet.relay.target(TARGET))
    stranger = fleet.ask("bind", principal="CN=stranger", target_ids=[TARGET])
    assert stranger["error"]["code"] == "gateway_not_trusted"
    # a trusted principal named from another gateway's subject token
    forged = fleet.ask("bind", principal=GATEWAY, subject_principal="CN=stranger",
                       target_ids=[TARGET])
    assert forged["error"]["code"] == "gateway_not_trusted"
    assert not fleet.relay.hub.links and fleet.host.counts["not_trusted"] == 2


def test_a_target_is_linked_only_while_a_gateway_binds_it(fleet: Fleet) -> None:
    target = fleet.relay.target(TARGET)
    fleet.relay.register(target)
    assert not fleet.relay.hub.links, "registration links nothing"
    reply = fleet.ask("bind", target_ids=[TARGET, "nobody"], lease_seconds=5)
    assert reply["result"] == {"bound": [TARGET], "unknown": ["nobody"]}
    fleet.relay.settle()
    assert TARGET in fleet.relay.hub.links
    envelopes = fleet.of(stream_subject("h1", TARGET))
    assert envelopes[0]["seq"] == 1 and envelopes[0]["target_id"] == f"h1/{TARGET}"
    kinds = [m["type"] for e in envelopes for m in e["messages"]]
    assert "state" in kinds
    state = next(m for e in envelopes for m in e["messages"] if m["type"] == "state")
    assert state["state"]["target"]["target_id"] == f"h1/{TARGET}"
    target.emit_event("child_running")
    fleet.relay.settle()
    events = [m for e in fleet.of(stream_subject("h1", TARGET)) for m in e["messages"]
              if m["type"] == "event"]
    assert events and events[-1]["event"]["target_id"] == f"h1/{TARGET}"
    seqs = [e["seq"] for e in fleet.of(stream_subject("h1", TARGET))]
    assert seqs == list(range(1, len(seqs) + 1))
    fleet.ask("unbind", target_ids=[TARGET])
    assert TARGET not in fleet.relay.hub.links


def test_an_unrenewed_lease_unbinds(fleet: Fleet) -> None:
    fleet.relay.register(fleet.relay.target(TARGET))
    fleet.ask("bind", target_ids=[TARGET], lease_seconds=3)
    fleet.relay.settle(2)
    fleet.ask("bind", target_ids=[TARGET], lease_seconds=3)  # renewed
    fleet.relay.settle(2)
    assert TARGET in fleet.relay.hub.links
    for _ in range(4):
        fleet.relay.settle(1)
    assert TARGET not in fleet.relay.hub.links
    assert fleet.host.counts["interest_lapsed"] == 1


def _command(command_id: str, requested_by: str = OPERATOR.principal) -> dict[str, Any]:
    return {"target_id": TARGET, "operator": OPERATOR.to_json(), "session_id": "s-1",
            "method": "command.restart_child", "timeout": 30, "params": {
                "command_id": command_id, "correlation_id": command_id,
                "target_id": TARGET, "command": "restart_child",
                "target": {"child_path": "/root/worker", "child_manifest": None},
                "reason": "deploy", "requested_by": requested_by, "confirmed": True,
                "requested_at": "2026-12-03T00:00:00.000000Z",
                "requested_at_unix_nanos": 0}}


def test_a_command_is_audited_with_both_principals_and_answered(fleet: Fleet) -> None:
    fleet.relay.register(fleet.relay.target(TARGET))
    fleet.ask("bind", target_ids=[TARGET])
    fleet.relay.settle()
    reply = fleet.ask("command", **_command("c-1"))
    assert reply["ok"], reply
    assert reply["result"]["type"] == "command_result"
    assert reply["result"]["result"]["target_id"] == f"h1/{TARGET}"
    records = [r for r in fleet.relay.audit.records if r.command_id == "c-1"]
    assert [r.result for r in records] == ["accepted", "completed"]
    assert {r.identity for r in records} == {OPERATOR}
    assert {r.session_id for r in records} == {"fleet:s-1"}
    assert all(GATEWAY in r.detail for r in records)


def test_a_command_not_requested_by_its_operator_is_refused_and_audited(fleet: Fleet) -> None:
    fleet.relay.register(fleet.relay.target(TARGET))
    fleet.ask("bind", target_ids=[TARGET])
    fleet.relay.settle()
    reply = fleet.ask("command", **_command("c-2", requested_by="CN=someone else"))
    assert reply["error"]["code"] == "requested_by_mismatch"
    assert [(r.command_id, r.result) for r in fleet.relay.audit.records] == [("c-2", "rejected")]


def test_a_command_to_an_unbound_target_is_refused(fleet: Fleet) -> None:
    fleet.relay.register(fleet.relay.target(TARGET))
    reply = fleet.ask("command", **_command("c-3"))
    assert reply["error"]["code"] == "target_unavailable"
    assert not fleet.relay.hub.links


def test_gateway_instances_past_the_bound_are_refused_and_counted(fleet: Fleet) -> None:
    fleet.relay.register(fleet.relay.target(TARGET))
    for n in range(MAX_GATEWAY_INSTANCES):
        assert fleet.ask("bind", instance=f"gw-{n}", target_ids=[TARGET])["result"]["bound"]
    refused = fleet.ask("bind", instance="gw-one-too-many", target_ids=[TARGET])
    assert refused["result"] == {"bound": [], "unknown": [TARGET]}
    assert fleet.host.counts["interest_refused"] == 1
    # an instance already known still renews
    assert fleet.ask("bind", instance="gw-0", target_ids=[TARGET])["result"]["bound"]


def test_requests_past_the_in_flight_bound_are_refused_busy(fleet: Fleet) -> None:
    target = fleet.relay.target(TARGET)
    fleet.relay.register(target)
    fleet.ask("bind", target_ids=[TARGET])
    fleet.relay.settle()
    target.freeze()  # reads wait for an answer that does not come
    pending = [fleet.send("request", target_id=TARGET, method="state", params={})
               for _ in range(MAX_IN_FLIGHT)]
    fleet.relay.settle()
    assert not any(pending)
    busy = fleet.ask("request", target_id=TARGET, method="state", params={})
    assert busy["error"]["code"] == "host_busy" and busy["error"]["retryable"] is True
    assert fleet.host.counts["busy"] == 1


def test_a_message_too_big_for_the_bus_is_not_sent_and_its_seq_is_skipped(fleet: Fleet) -> None:
    target = fleet.relay.target(TARGET)
    fleet.relay.register(target)
    fleet.ask("bind", target_ids=[TARGET], lease_seconds=5)
    fleet.relay.settle()
    target.emit_log("x" * (1024 * 1024))  # the IPC link takes it; the bus cannot
    fleet.relay.settle()
    target.emit_log("after")
    fleet.relay.settle()
    envelopes = fleet.of(stream_subject("h1", TARGET))
    assert fleet.host.counts["stream_oversize"] == 1
    seqs = [e["seq"] for e in envelopes]
    assert seqs[-1] == seqs[-2] + 2  # the gateway sees the gap and counts the loss
    logs = [m["log"]["message"] for e in envelopes for m in e["messages"] if m["type"] == "log"]
    assert logs == ["after"]
    assert all(len(m.data) <= 1024 * 1024 for m in fleet.heard)


def test_a_registry_over_the_bus_limit_is_cut_and_counted(fleet: Fleet) -> None:
    name = "n" * 256  # the longest display name: about 1 KB a row
    for i in range(1200):
        fleet.relay.register(fleet.relay.target(f"t{i:04d}"), display_name=f"{i:04d}{name}"[:256])
    fleet.relay.settle(1)
    [*_, last] = fleet.of(registry_subject("h1"))
    kept = len(last["targets"])
    assert 0 < kept < 1200
    assert fleet.host.counts["registry_truncated"] >= 1200 - kept
    assert len(encode(last)) <= 1024 * 1024
    assert [t["target_id"] for t in last["targets"]] == [f"h1/t{i:04d}" for i in range(kept)]
