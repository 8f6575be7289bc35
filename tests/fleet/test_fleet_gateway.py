"""The fleet gateway's logic on a MemoryBus and a fake clock: scripted hosts answer as the
fleet design says, sessions run on in-memory transports through the relay's own hub."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet.task import Clock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "relay"))

from gateway_fakehost import FakeHost, state_of  # noqa: E402
from relay_memory import HELLO, OPERATOR, VIEWER, MemoryAudit, MemoryTransport, settle  # noqa: E402
from supervisor.config.gateway import parse_gateway_config  # noqa: E402
from supervisor.fleet.bus import MemoryNetwork  # noqa: E402
from supervisor.fleet.gateway import (MAX_READS_IN_FLIGHT, FleetDirectory,  # noqa: E402
                                      GatewayCommands)
from supervisor.fleet.subjects import gateway_token, stream_subject  # noqa: E402
from supervisor.relay.hub import RelayHub  # noqa: E402

PRINCIPAL = "CN=fleet-gateway, O=Supervisor Demo"


def gateway_dict(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "listen": {"bind": "127.0.0.1:0", "public_url": "wss://localhost:9443/supervisor"},
        "tls": {"certificate_path": "gw.pem", "private_key_path": "gw-key.pem",
                "client_ca_path": "ca.pem"},
        "authorization": {"operators": [{"principal": "CN=demo operator", "commands": "all"}]},
        "audit": {"path": "audit.sqlite3"},
        "nats": {"servers": ["tls://127.0.0.1:4222"],
                 "tls": {"ca_path": "nats-ca.pem", "certificate_path": "gateway.pem",
                         "private_key_path": "gateway-key.pem"}},
    }
    data.update(sections)
    return data


class Fleet:
    """A gateway (directory + hub) and scripted hosts on one MemoryNetwork and Clock."""

    def __init__(self, hosts: dict[str, list[str]], *, trusted: tuple[str, ...] = (PRINCIPAL,),
                 **sections: Any) -> None:
        self.clock = Clock()
        self.network = MemoryNetwork(self.clock)
        self.config = parse_gateway_config(gateway_dict(**sections), "/memory")
        self.bus = self.network.client(
            "gateway", publish=(f"fleet.rpc.*.{gateway_token(PRINCIPAL)}",))
        self.directory = FleetDirectory(self.bus, self.config.gateway, clock=self.clock,
                                        principal=PRINCIPAL,
                                        max_targets=self.config.limits.max_targets)
        self.audit = MemoryAudit()
        self.hub = RelayHub(self.config, self.directory, self.audit, reactor=self.clock,
                            link_factory=self.directory.link_for, processor=GatewayCommands)
        self.directory.start()
        self.hosts = {
            host_id: FakeHost(self.network.client(host_id, publish=(f"fleet.host.{host_id}.>",)),
                              self.clock, host_id, targets, trusted=trusted)
            for host_id, targets in hosts.items()}
        self.settle()

    def settle(self, seconds: float = 0.0) -> None:
        settle(self.clock, seconds)

    def session(self, identity: Any = OPERATOR) -> tuple[Any, MemoryTransport]:
        transport = MemoryTransport(self.clock)
        session = self.hub.open_session(identity, transport)
        transport.session = session
        self.send(session, HELLO)
        return session, transport

    def send(self, session: Any, message: Any) -> None:
        session.receive(json.dumps(message).encode(), False)
        self.settle()

    def listeners(self, host_id: str, target: str) -> int:
        return self.network.listeners(stream_subject(host_id, target))


def states(ws: MemoryTransport, target_id: str) -> list[dict[str, Any]]:
    return ws.of_type("state", target_id)


def connection_states(ws: MemoryTransport, target_id: str) -> list[str]:
    return [m["state"] for m in ws.of_type("connection_state", target_id)]


def test_target_list_names_every_hosts_targets_by_fleet_id_with_their_host():
    fleet = Fleet({"alpha": ["web", "db"], "beta": ["web"]})
    assert [e.target_id for e in fleet.directory.entries()] == ["alpha/db", "alpha/web",
                                                                 "beta/web"]
    session, ws = fleet.session()
    targets = ws.last("target_list")["targets"]
    assert [(t["target_id"], t["host_id"]) for t in targets] == [
        ("alpha/db", "alpha"), ("alpha/web", "alpha"), ("beta/web", "beta")]
    assert targets[0]["display_name"] == "db on alpha"
    assert [c["name"] for c in targets[0]["supported_commands"]][0] == "restart_child"
    for target_id in ("alpha/db", "alpha/web", "beta/web"):  # one state each, in fleet form
        [state] = states(ws, target_id)
        assert state["state"]["target"]["target_id"] == target_id
    fleet.settle(0.3)
    final = ws.last("target_list")["targets"]
    assert {t["connection_state"] for t in final} == {"connected"}


def test_nothing_is_bound_before_a_session_and_binds_are_coalesced_per_host():
    fleet = Fleet({"alpha": ["web", "db"], "beta": ["web"]})
    fleet.settle(5)
    alpha, beta = fleet.hosts["alpha"], fleet.hosts["beta"]
    assert alpha.of_op("bind") == [] and beta.of_op("bind") == []
    assert alpha.of_op("registry")  # the heartbeat named a generation it had not seen
    assert fleet.listeners("alpha", "web") == 0
    fleet.session()
    [bind] = alpha.of_op("bind")  # both targets of the host in one request
    assert bind["target_ids"] == ["db", "web"] and bind["lease_seconds"] == 10
    assert bind["gateway_principal"] == PRINCIPAL
    assert bind["gateway_instance"] == fleet.directory.instance_id
    assert [b["target_ids"] for b in beta.of_op("bind")] == [["web"]]
    assert fleet.listeners("alpha", "web") == 1


def test_a_second_session_gets_a_fresh_state_without_binding_again():
    fleet = Fleet({"alpha": ["web"]})
    fleet.session()
    _, second = fleet.session()
    [state] = states(second, "alpha/web")
    assert state["state"]["state_generation"] == 2  # read by op request, not the stream
    assert len(fleet.hosts["alpha"].of_op("bind")) == 1
    assert [r["method"] for r in fleet.hosts["alpha"].of_op("request")] == ["state"]
    assert fleet.hosts["alpha"].of_op("request")[0]["params"]["target_id"] == "web"


def test_leases_are_renewed_with_the_full_set_and_the_last_session_unbinds():
    fleet = Fleet({"alpha": ["web", "db"]})
    session, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    fleet.settle(10 / 3 + 0.01)
    assert [b["target_ids"] for b in alpha.of_op("bind")] == [["db", "web"], ["db", "web"]]
    fleet.settle(10 / 3)
    assert len(alpha.of_op("bind")) == 3
    ws.close(1000, "bye")
    fleet.settle()
    [unbind] = alpha.of_op("unbind")
    assert unbind["target_ids"] == ["db", "web"]
    assert fleet.listeners("alpha", "web") == 0 and fleet.hub.links == {}
    fleet.settle(10)
    assert len(alpha.of_op("bind")) == 3  # nothing renewed for nobody


def test_state_reads_past_the_bound_wait_their_turn_and_binds_do_not_wait_behind_them():
    targets = [f"t{i:03d}" for i in range(MAX_READS_IN_FLIGHT + 44)]
    fleet = Fleet({"alpha": targets})
    fleet.session()  # binds everything; the host streams each target's state
    alpha = fleet.hosts["alpha"]
    alpha.script["request"] = lambda request: None  # reads go unanswered (and time out)
    _, second = fleet.session()  # every link is connected: a state read each
    assert len(alpha.of_op("request")) == MAX_READS_IN_FLIGHT
    assert fleet.directory.reads_waiting == 44
    fleet.settle(10 / 3 + 0.01)  # the lease renewal is not held up by the reads
    assert len(alpha.of_op("bind")) == 2
    del alpha.script["request"]
    fleet.settle(10)  # the first reads time out (twice 5 s): the waiting ones go out
    read = [r["target_id"] for r in alpha.of_op("request")]
    assert len(read) == len(targets) and sorted(set(read)) == targets
    assert fleet.directory.reads_waiting == 0
    assert {m["target_id"] for m in states(second, None)} >= {f"alpha/{t}" for t in
                                                              targets[MAX_READS_IN_FLIGHT:]}


def test_stream_messages_reach_bound_sessions():
    fleet = Fleet({"alpha": ["web"]})
    _, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    alpha.stream("web", [alpha.event("web", 1), alpha.event("web", 2)])
    fleet.settle()
    assert [m["event"]["sequence"] for m in ws.of_type("event", "alpha/web")] == [1, 2]


def test_a_seq_gap_is_counted_as_dropped_events_and_refilled_by_a_fresh_state():
    fleet = Fleet({"alpha": ["web"]})
    _, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    alpha.stream("web", [alpha.event("web", 1)])  # seq 2
    alpha.stream("web", [alpha.event("web", 5)], seq=5)  # 3 and 4 never arrive
    fleet.settle()
    link = fleet.hub.links["alpha/web"]
    assert link.gaps == 2 and fleet.directory.counts["stream_lost"] == 2
    assert link.dropped == (2, 0)
    dropped = ws.last("dropped_count")
    assert (dropped["dropped_event_count"], dropped["dropped_log_count"]) == (2, 0)
    assert len(states(ws, "alpha/web")) == 2  # the first, then the refill
    assert ws.types()[-1] == "state"
    alpha.stream("web", [alpha.event("web", 6)])  # seq 6: in order again
    fleet.settle()
    assert link.gaps == 2


def test_a_stale_or_foreign_envelope_is_refused_and_counted():
    fleet = Fleet({"alpha": ["web", "db"]})
    _, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    alpha.stream("web", [alpha.event("web", 1)], seq=1)  # a restarted stream: accepted
    alpha.bus.publish(stream_subject("alpha", "web"), b"{not json")
    alpha.bus.publish(stream_subject("alpha", "web"), json.dumps(
        {"target_id": "alpha/db", "seq": 2, "messages": []}).encode())
    alpha.stream("web", [{"type": "event", "target_id": "alpha/db", "event": {}},
                         {"type": "audit_event", "target_id": "alpha/web", "audit": {}}])
    fleet.settle()
    counts = fleet.directory.counts
    assert counts["stream_malformed"] == 2 and counts["stream_messages_ignored"] == 2
    assert [m["event"]["sequence"] for m in ws.of_type("event", "alpha/web")] == [1]
    assert ws.of_type("event", "alpha/db") == []


def test_a_host_without_heartbeats_is_unavailable_and_recovers():
    fleet = Fleet({"alpha": ["web"], "beta": ["web"]})
    _, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    alpha.stop_heartbeats()
    fleet.settle(2.6)
    assert connection_states(ws, "alpha/web") == ["unavailable"]
    assert connection_states(ws, "beta/web") == []
    listed = {t["target_id"]: t["connection_state"] for t in ws.last("target_list")["targets"]}
    assert listed == {"alpha/web": "unavailable", "beta/web": "connected"}
    failures: list[Any] = []  # requests fail fast while the host is away
    fleet.hub.links["alpha/web"].fetch_state().addErrback(failures.append)
    assert [f.value.code for f in failures] == ["target_unavailable"]
    before = len(alpha.of_op("bind"))
    alpha.start_heartbeats()
    fleet.settle(0.3)
    assert len(alpha.of_op("bind")) == before + 1  # bound again at once
    assert connection_states(ws, "alpha/web")[-2:] == ["connecting", "connected"]
    assert len(states(ws, "alpha/web")) == 2  # a fresh state after the return
    listed = {t["target_id"]: t["connection_state"] for t in ws.last("target_list")["targets"]}
    assert listed == {"alpha/web": "connected", "beta/web": "connected"}


def test_an_unbound_target_of_an_unavailable_host_is_listed_unavailable():
    fleet = Fleet({"alpha": ["web"]})
    fleet.hosts["alpha"].stop_heartbeats()
    fleet.settle(2.6)
    assert fleet.hub.target_list()[0]["connection_state"] == "unavailable"
    fleet.hosts["alpha"].start_heartbeats()
    fleet.settle()
    assert fleet.hub.target_list()[0]["connection_state"] == "registered"


def test_losing_the_bus_makes_every_host_unavailable_at_once():
    fleet = Fleet({"alpha": ["web"], "beta": ["web"]})
    _, ws = fleet.session()
    fleet.network.set_up(False)
    fleet.settle()
    assert connection_states(ws, "alpha/web") == ["unavailable"]
    assert connection_states(ws, "beta/web") == ["unavailable"]
    assert fleet.directory.hosts() == {"alpha": False, "beta": False}
    fleet.network.set_up(True)
    fleet.settle(0.6)
    assert fleet.directory.hosts() == {"alpha": True, "beta": True}
    assert connection_states(ws, "alpha/web")[-1] == "connected"
    assert connection_states(ws, "beta/web")[-1] == "connected"


def test_a_host_restart_is_bound_again_and_its_registry_reread():
    fleet = Fleet({"alpha": ["web"]})
    _, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    alpha.instance_id, alpha.bound = "host-inst-2", set()
    alpha.targets = ["web", "api"]
    fleet.settle(0.6)
    # bound again at once, then the new target the reread registry lists
    assert [b["target_ids"] for b in alpha.of_op("bind")] == [["web"], ["web"], ["api"]]
    assert len(alpha.of_op("registry")) == 2
    assert [t["target_id"] for t in ws.last("target_list")["targets"]] == ["alpha/api",
                                                                         "alpha/web"]
    assert len(states(ws, "alpha/web")) == 2  # seq restarted at 1 with a state


def test_a_target_the_host_no_longer_lists_expires():
    fleet = Fleet({"alpha": ["web", "db"]})
    _, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    alpha.change(["web"])
    fleet.settle(0.6)
    assert connection_states(ws, "alpha/db") == ["expired"]
    assert [t["target_id"] for t in ws.last("target_list")["targets"]] == ["alpha/web"]
    assert fleet.listeners("alpha", "db") == 0


def test_a_command_is_forwarded_with_the_operators_identity_and_audited_at_the_gateway():
    fleet = Fleet({"alpha": ["web"]})
    session, ws = fleet.session()
    fleet.send(session, {"type": "command", "command_id": "cmd-1", "correlation_id": None,
                         "target_id": "alpha/web", "command": "restart_child",
                         "target": {"child_path": "/root/w"}, "reason": "stuck",
                         "confirmed": False})
    fleet.settle()
    [forwarded] = fleet.hosts["alpha"].of_op("command")
    assert forwarded["operator"] == OPERATOR.to_json()
    assert forwarded["session_id"] == session.session_id
    assert forwarded["target_id"] == "web" and forwarded["method"] == "command.restart_child"
    assert forwarded["params"]["target_id"] == "web"
    assert forwarded["params"]["requested_by"] == OPERATOR.principal
    result = ws.last("command_result")
    assert result["target_id"] == "alpha/web" and result["result"]["status"] == "completed"
    assert fleet.audit.results() == [("cmd-1", "accepted"), ("cmd-1", "completed")]
    assert {r.identity for r in fleet.audit.records} == {OPERATOR}
    assert {r.target_id for r in fleet.audit.records} == {"alpha/web"}


def test_a_command_the_gateway_does_not_permit_never_reaches_the_host():
    fleet = Fleet({"alpha": ["web"]})
    session, ws = fleet.session(VIEWER)
    fleet.send(session, {"type": "command", "command_id": "cmd-2", "correlation_id": None,
                         "target_id": "alpha/web", "command": "restart_child",
                         "target": {"child_path": "/root/w"}, "reason": "stuck",
                         "confirmed": False})
    assert ws.last("error")["error"]["code"] == "command_not_permitted"
    assert fleet.hosts["alpha"].of_op("command") == []
    assert fleet.audit.results() == [("cmd-2", "rejected")]


def test_a_command_the_host_refuses_or_never_answers_fails_and_is_audited():
    fleet = Fleet({"alpha": ["web"]})
    session, ws = fleet.session()
    alpha = fleet.hosts["alpha"]
    alpha.script["command"] = lambda request: {"ok": False, "error": {
        "code": "unsupported_command", "stage": "command_validate", "target_id": "alpha/web",
        "message": "no", "retryable": False}}
    command = {"type": "command", "command_id": "cmd-3", "correlation_id": None,
               "target_id": "alpha/web", "command": "pause_child",
               "target": {"child_path": "/root/w"}, "reason": "r", "confirmed": False}
    fleet.send(session, command)
    assert ws.last("command_result")["result"]["status"] == "rejected"
    alpha.script["command"] = lambda request: None  # the host never answers
    fleet.send(session, {**command, "command_id": "cmd-4"})
    fleet.settle(30 + 5 + 0.1)
    result = ws.last("command_result")["result"]
    assert result["command_id"] == "cmd-4" and result["error"]["code"] == "command_timeout"
    assert fleet.audit.results()[-2:] == [("cmd-4", "accepted"), ("cmd-4", "failed")]


def test_a_host_that_does_not_trust_the_gateway_shows_nothing_and_is_counted():
    fleet = Fleet({"alpha": ["web"]}, trusted=("CN=another gateway",))
    fleet.settle(1)
    assert fleet.directory.entries() == []
    assert fleet.directory.counts["not_trusted"] >= 1


def test_malformed_and_unknown_bus_messages_are_refused_and_counted():
    fleet = Fleet({"alpha": ["web"]}, gateway={"max_hosts": 1})
    alpha = fleet.hosts["alpha"]
    alpha.bus.publish("fleet.host.alpha.heartbeat", b"[1, 2")
    alpha.bus.publish("fleet.host.alpha.heartbeat", json.dumps(
        {"host_id": "beta", "instance_id": "x", "generation": 1}).encode())
    alpha.bus.publish("fleet.host.alpha.registry", b"x" * (1024 * 1024 + 1))
    alpha.bus.publish("fleet.host.alpha.registry", json.dumps(
        {**alpha.registry(), "generation": 99, "targets": [
            {"target_id": "beta/web", "display_name": "x", "supported_commands": []},
            {"target_id": "alpha/ok", "display_name": "ok", "supported_commands": "all"}]}
    ).encode())
    other = fleet.network.client("gamma", publish=("fleet.host.gamma.>",))
    FakeHost(other, fleet.clock, "gamma", ["web"], trusted=(PRINCIPAL,))
    fleet.settle()
    counts = fleet.directory.counts
    assert counts["heartbeat_malformed"] == 2 and counts["registry_oversize"] == 1
    assert counts["registry_entries_malformed"] == 2
    assert counts["hosts_ignored"] >= 1  # gamma: beyond gateway.max_hosts
    assert fleet.directory.hosts() == {"alpha": True}
    assert fleet.directory.entries() == []  # generation 99 listed only refused entries


def test_a_malformed_reply_is_refused():
    fleet = Fleet({"alpha": ["web"]})
    fleet.hosts["alpha"].script["request"] = lambda request: b'{"result": 1}'
    fleet.session()
    _, second = fleet.session()
    assert states(second, "alpha/web") == []
    assert fleet.directory.counts["replies_malformed"] == 1


def test_limits_max_targets_bounds_the_directory():
    fleet = Fleet({"alpha": ["a", "b", "c"]}, limits={"max_targets": 2})
    assert len(fleet.directory) == 2
    assert fleet.directory.counts["targets_ignored"] >= 1


def test_history_requests_go_to_the_host_with_the_local_id():
    fleet = Fleet({"alpha": ["web"]})
    session, ws = fleet.session()
    fleet.send(session, {"type": "history_request", "request_id": "h1",
                         "target_id": "alpha/web", "stream": "logs", "limit": 10})
    page = ws.last("history_page")
    assert page["target_id"] == "alpha/web" and page["records"] == []
    [request] = fleet.hosts["alpha"].of_op("request")[-1:]
    assert request["method"] == "history.logs"
    assert request["params"] == {"limit": 10, "target_id": "web"}


def test_state_of_helper_is_in_fleet_form():
    assert state_of("alpha/web")["target"]["target_id"] == "alpha/web"
