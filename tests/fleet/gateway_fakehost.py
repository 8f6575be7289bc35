"""A scripted fleet host on a MemoryBus, for the gateway's unit tests: it heartbeats,
publishes its registry and answers ``registry``, ``bind``, ``unbind``, ``request`` and
``command`` as the fleet design says a host relay does, recording every request."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import LoopingCall

from supervisor.fleet.bus import BusMessage, MemoryBus
from supervisor.fleet.subjects import (fleet_target_id, gateway_token, heartbeat_subject,
                                       host_rpc_pattern, registry_subject, stream_subject)

COMMANDS = [{"name": name, "idempotent": name in ("pause_child", "resume_child"),
             "timeout_seconds": 30}
            for name in ("restart_child", "pause_child", "resume_child", "quarantine_child",
                         "remove_child", "add_child", "shutdown_tree")]


def state_of(fleet_id: str, instance: str = "inst-1", generation: int = 1) -> dict[str, Any]:
    """A small DashboardState in fleet form."""
    return {"target": {"target_id": fleet_id, "display_name": fleet_id,
                       "registration_state": "active", "connection_state": "connected",
                       "instance_id": instance},
            "topology": {"root": None, "nodes": [], "edges": [], "declaration_order": []},
            "runtime_state": [], "recent_events": [], "recent_logs": [],
            "dropped_event_count": 0, "dropped_log_count": 0, "config_version": "1",
            "generated_at": "2026-12-02T00:00:00.000000Z", "state_generation": generation}


class FakeHost:
    """One host relay's fleet side, scripted."""

    def __init__(self, bus: MemoryBus, clock: Any, host_id: str, targets: list[str], *,
                 trusted: tuple[str, ...], instance_id: str = "host-inst-1",
                 heartbeat_ms: int = 500) -> None:
        self.bus, self.clock, self.host_id = bus, clock, host_id
        self.targets = list(targets)
        self.trusted = trusted
        self.instance_id = instance_id
        self.generation = 1
        self.requests: list[dict[str, Any]] = []
        self.bound: set[str] = set()
        self.seq: dict[str, int] = {}
        #: replies scripted per op (a callable(request) -> reply dict, or bytes)
        self.script: dict[str, Any] = {}
        self.subscription = bus.subscribe(host_rpc_pattern(host_id), self._rpc)
        self._beat = LoopingCall(self.heartbeat)
        self._beat.clock = clock
        self._beat.start(heartbeat_ms / 1000.0, now=True)

    # what a host publishes
    def heartbeat(self) -> None:
        self.bus.publish(heartbeat_subject(self.host_id), json.dumps({
            "host_id": self.host_id, "instance_id": self.instance_id,
            "generation": self.generation, "sent_at": "2026-12-02T00:00:00.000000Z",
            "interval_ms": 500}).encode())

    def stop_heartbeats(self) -> None:
        if self._beat.running:
            self._beat.stop()

    def start_heartbeats(self) -> None:
        if not self._beat.running:
            self._beat.start(0.5, now=True)

    def registry(self) -> dict[str, Any]:
        return {"host_id": self.host_id, "instance_id": self.instance_id,
                "generation": self.generation, "targets": [{
                    "target_id": fleet_target_id(self.host_id, t), "host_id": self.host_id,
                    "display_name": f"{t} on {self.host_id}", "registration_state": "active",
                    "connection_state": "connected" if t in self.bound else "registered",
                    "instance_id": None, "supported_commands": COMMANDS}
                    for t in self.targets]}

    def publish_registry(self) -> None:
        self.bus.publish(registry_subject(self.host_id), json.dumps(self.registry()).encode())

    def change(self, targets: list[str]) -> None:
        """A registry change: new generation, announced by the next heartbeat."""
        self.targets = list(targets)
        self.generation += 1

    def stream(self, target: str, messages: list[dict[str, Any]], seq: int | None = None) -> None:
        """One stream envelope (the next seq unless one is given)."""
        self.seq[target] = seq if seq is not None else self.seq.get(target, 0) + 1
        fleet_id = fleet_target_id(self.host_id, target)
        self.bus.publish(stream_subject(self.host_id, target), json.dumps({
            "target_id": fleet_id, "seq": self.seq[target], "messages": messages}).encode())

    def event(self, target: str, sequence: int) -> dict[str, Any]:
        fleet_id = fleet_target_id(self.host_id, target)
        return {"type": "event", "target_id": fleet_id, "event": {
            "target_id": fleet_id, "sequence": sequence, "correlation_id": f"c{sequence}",
            "event_type": "child_started", "severity": "info", "target_path": "/root/w",
            "child_id": "w", "occurred_at": "2026-12-02T00:00:00.000000Z",
            "config_version": "1", "payload": {}}}

    # requests
    def of_op(self, op: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("op") == op]

    def _rpc(self, message: BusMessage) -> None:
        request = json.loads(message.data)
        self.requests.append(request)
        token = message.subject.rsplit(".", 1)[1]
        principal = request.get("gateway_principal")
        if token != gateway_token(str(principal)) or principal not in self.trusted:
            self._reply(message, {"ok": False, "error": {
                "code": "gateway_not_trusted", "stage": "fleet", "target_id": None,
                "message": f"gateway {principal} is not trusted", "retryable": False}})
            return
        scripted = self.script.get(request["op"])
        if scripted is not None:
            answer = scripted(request)
            if answer is None:
                return  # no reply at all
            if isinstance(answer, bytes):
                self.bus.reply(message, answer)
                return
            self._reply(message, answer)
            return
        self._reply(message, getattr(self, "_op_" + request["op"])(request))

    def _reply(self, message: BusMessage, reply: dict[str, Any]) -> None:
        self.bus.reply(message, json.dumps(reply).encode())

    def _op_registry(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "result": self.registry()}

    def _op_bind(self, request: dict[str, Any]) -> dict[str, Any]:
        bound, unknown, new = [], [], []
        for target in request["target_ids"]:
            if target in self.targets:
                bound.append(target)
                if target not in self.bound:
                    new.append(target)
                    self.bound.add(target)
            else:
                unknown.append(target)
        for target in new:  # the first stream message after binding: its state
            self.seq[target] = 0
            fleet_id = fleet_target_id(self.host_id, target)
            self.stream(target, [{"type": "state", "target_id": fleet_id,
                                  "state": state_of(fleet_id)}])
        return {"ok": True, "result": {"bound": bound, "unknown": unknown}}

    def _op_unbind(self, request: dict[str, Any]) -> dict[str, Any]:
        for target in request["target_ids"]:
            self.bound.discard(target)
        return {"ok": True, "result": {"unbound": request["target_ids"]}}

    def _op_request(self, request: dict[str, Any]) -> dict[str, Any]:
        fleet_id = fleet_target_id(self.host_id, request["target_id"])
        if request["method"] == "state":
            return {"ok": True, "result": {"type": "state", "target_id": fleet_id,
                                           "state": state_of(fleet_id, generation=2)}}
        return {"ok": True, "result": {"type": "history_page", "records": [],
                                       "next_cursor": None, "evicted": False}}

    def _op_command(self, request: dict[str, Any]) -> dict[str, Any]:
        params = request["params"]
        fleet_id = fleet_target_id(self.host_id, request["target_id"])
        if params.get("requested_by") != request["operator"]["principal"]:
            return {"ok": False, "error": {"code": "requested_by_mismatch",
                                           "stage": "command_validate", "target_id": fleet_id,
                                           "message": "requested_by", "retryable": False}}
        return {"ok": True, "result": {"type": "command_result", "target_id": fleet_id,
                                       "result": {
            "command_id": params["command_id"], "correlation_id": params["correlation_id"],
            "target_id": fleet_id, "accepted": True, "status": "completed",
            "requested_by": params["requested_by"], "error": None, "state_delta": None,
            "completed_at": "2026-12-02T00:00:01.000000Z"}}}
