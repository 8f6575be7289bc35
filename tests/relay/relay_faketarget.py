"""A small fake target speaking CONTRACTS.md §1 over a real Unix socket, for relay tests.

It keeps a tiny tree (root plus named children), a journal of events and logs with
sequences, answers hello/state/events.subscribe/logs.tail/command.* like a real target
(including pushes to subscribed connections), records every request it got, and can be told
to hang (never answer) to exercise the relay's deadlines.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

from twisted.internet.protocol import Factory
from twisted.internet.defer import Deferred

from supervisor.wire.vocabulary import COMMANDS
from supervisor.wire.ndjson import NDJSONReceiver, decode, encode
from supervisor.wire.errors import WireError
from supervisor.wire.timestamps import rfc3339, unix_nanos
from supervisor.wire.unixsocket import listen_unix

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fixture(name: str) -> Any:
    """One contract example (copied into the repo from CONTRACTS.md's examples)."""
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def registration_payload(target_id: str, ipc_path: str, lease: int = 30,
                         display_name: str | None = None) -> dict[str, Any]:
    payload = fixture("registration.request.json")
    payload.update(target_id=target_id, ipc_path=ipc_path, lease_seconds=lease,
                   display_name=display_name or str(target_id).replace("-", " "))
    return payload


class FakeTargetProtocol(NDJSONReceiver):
    factory: "FakeTarget"

    def connectionMade(self) -> None:
        self.subscribed: set[str] = set()
        self.factory.connections.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.factory.connections:
            self.factory.connections.remove(self)

    def lineReceived(self, line: bytes) -> None:
        target = self.factory
        try:
            request = decode(line)
        except WireError as e:
            self.transport.write(encode({"request_id": "invalid-request", "ok": False,
                                         "error": e.to_json()}))
            return
        method, params = request.get("method"), request.get("params")
        target.requests.append((method, params))
        if target.hang:
            return
        request_id = request["request_id"]
        try:
            result = target.handle(self, method, params)
        except WireError as e:
            self.transport.write(encode({"request_id": request_id, "ok": False,
                                         "error": e.to_json()}))
            return
        self.transport.write(encode({"request_id": request_id, "ok": True, "result": result}))
        for push in target.after_response:
            self.transport.write(encode(push))
        target.after_response = []


class FakeTarget(Factory):
    """See module docstring. ``children`` maps child id → lifecycle state."""

    protocol = FakeTargetProtocol

    def __init__(self, reactor: Any, target_id: str, path: str,
                 children: dict[str, str] | None = None) -> None:
        self.reactor = reactor
        self.target_id = target_id
        self.path = path
        self.children = dict(children or {"worker": "running", "invoice_writer": "running"})
        self.generation = 1
        self.events: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.requests: list[tuple[Any, Any]] = []
        self.connections: list[FakeTargetProtocol] = []
        self.after_response: list[dict[str, Any]] = []
        self.hang = False
        self.command_delay: float | None = None
        self.port: Any = None

    # lifecycle
    def start(self) -> "FakeTarget":
        self.port = listen_unix(self.reactor, self.path, self, 0o600)
        return self

    def stop(self) -> Deferred[Any] | None:
        """Stop listening and drop every connection (like the process dying)."""
        for conn in list(self.connections):
            conn.transport.abortConnection()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def methods(self) -> list[Any]:
        return [m for m, _ in self.requests]

    # model
    def runtime(self, child_id: str) -> dict[str, Any]:
        row = copy.deepcopy(fixture("ipc.push-state-delta.json")["delta"]["runtime_state"][0])
        row.update(child_path=f"/root/{child_id}", lifecycle_state=self.children[child_id])
        return row

    def state(self) -> dict[str, Any]:
        state = copy.deepcopy(fixture("ipc.state.response.json")["result"]["state"])
        state["target"].update(target_id=self.target_id, display_name=self.target_id)
        root = state["topology"]["root"]
        template = state["topology"]["nodes"][1]
        nodes, edges = [root], []
        for index, (child_id, lifecycle) in enumerate(self.children.items()):
            node = copy.deepcopy(template)
            node.update(node_id=f"/root/{child_id}", child_id=child_id,
                        path=f"/root/{child_id}", name=child_id, state_summary=lifecycle)
            nodes.append(node)
            edges.append({"edge_id": f"parent:/root->/root/{child_id}", "source_path": "/root",
                          "target_path": f"/root/{child_id}", "kind": "parent_child",
                          "order": index})
        state["topology"].update(nodes=nodes, edges=edges,
                                 declaration_order=["/root"] + [n["path"] for n in nodes[1:]])
        state["runtime_state"] = [self.runtime(c) for c in self.children]
        state["recent_events"] = self.events[-128:]
        state["recent_logs"] = self.logs[-128:]
        state["state_generation"] = self.generation
        return state

    def _push(self, kind: str, push: dict[str, Any]) -> None:
        for conn in list(self.connections):
            if kind in conn.subscribed:
                conn.transport.write(encode(push))

    def emit_event(self, event_type: str = "child_running", child_id: str = "worker",
                   correlation_id: str | None = None, severity: str = "info",
                   payload: dict[str, Any] | None = None) -> dict[str, Any]:
        now = time.time()
        event = {
            "target_id": self.target_id, "sequence": len(self.events) + 1,
            "correlation_id": correlation_id or f"corr-{len(self.events) + 1}",
            "event_type": event_type, "severity": severity,
            "target_path": f"/root/{child_id}", "child_id": child_id,
            "occurred_at": rfc3339(now), "occurred_at_unix_nanos": unix_nanos(now),
            "config_version": "fake-1", "payload": payload or {},
        }
        self.events.append(event)
        self._push("events", {"type": "event", "target_id": self.target_id, "event": event})
        return event

    def emit_log(self, message: str = "hello", child_id: str = "worker",
                 severity: str = "info") -> dict[str, Any]:
        now = time.time()
        log = {"target_id": self.target_id, "sequence": len(self.logs) + 1,
               "correlation_id": None, "severity": severity, "message": message,
               "fields": {"stream": "stdout", "child_path": f"/root/{child_id}"},
               "occurred_at": rfc3339(now), "occurred_at_unix_nanos": unix_nanos(now)}
        self.logs.append(log)
        self._push("logs", {"type": "log", "target_id": self.target_id, "log": log})
        return log

    def push_dropped(self, events: int, logs: int) -> None:
        self._push("events", {"type": "dropped_count", "target_id": self.target_id,
                              "dropped_event_count": events, "dropped_log_count": logs})

    # §1 handling
    def handle(self, conn: FakeTargetProtocol, method: Any, params: Any) -> dict[str, Any]:
        tid = self.target_id
        if method == "hello":
            return {"type": "hello", "protocol_version": "dashboard-ipc.v1", "target_id": tid,
                    "registration": None}
        if not isinstance(params, dict) or params.get("target_id") != tid:
            stage = "command_validate" if str(method).startswith("command.") else "state"
            raise WireError("validation_failed", stage, "wrong target_id", tid)
        if method == "state":
            return {"type": "state", "target_id": tid, "state": self.state()}
        if method in ("events.subscribe", "logs.tail"):
            if params.get("session_established") is not True:
                raise WireError("session_required", "subscription", "no session", tid)
            kind = "events" if method == "events.subscribe" else "logs"
            conn.subscribed.add(kind)
            if kind == "events":
                since = params.get("since_sequence") or 0
                self.after_response = [{"type": "event", "target_id": tid, "event": e}
                                       for e in self.events if e["sequence"] > since]
            else:
                lines = params.get("lines", 100)
                self.after_response = [{"type": "log", "target_id": tid, "log": r}
                                       for r in self.logs[-lines:]] if lines else []
            return {"type": "subscription", "target_id": tid, "subscription": kind}
        if isinstance(method, str) and method.startswith("command."):
            return self._command(method, params)
        raise WireError("unsupported_method", "protocol_parse", f"unsupported {method}")

    def _command(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        tid = self.target_id
        command = params.get("command")
        if method != f"command.{command}" or command not in COMMANDS:
            raise WireError("invalid_command_params", "command_validate", "method mismatch",
                            tid)
        path = (params.get("target") or {}).get("child_path") or ""
        child_id = path.rsplit("/", 1)[-1]
        result = {"command_id": params["command_id"], "correlation_id":
                  params.get("correlation_id"), "target_id": tid,
                  "requested_by": params["requested_by"], "completed_at": rfc3339(time.time())}
        new_state = {"pause_child": "paused", "resume_child": "running",
                     "quarantine_child": "quarantined", "restart_child": "running"}.get(command)
        if child_id not in self.children or new_state is None:
            result.update(accepted=False, status="failed", state_delta=None,
                          error={"code": "unknown_child", "stage": "command_execute",
                                 "target_id": tid, "message": f"no child at {path}",
                                 "retryable": False})
            return {"type": "command_result", "target_id": tid, "result": result}
        self.children[child_id] = new_state
        self.generation += 1
        delta = {"state_generation": self.generation, "runtime_state": [self.runtime(child_id)]}
        self.emit_event(f"child_{new_state}" if new_state != "running" else "child_resumed",
                        child_id, correlation_id=params["command_id"])
        self._push("events", {"type": "state_delta", "target_id": tid, "delta": delta})
        result.update(accepted=True, status="completed", error=None, state_delta=delta)
        return {"type": "command_result", "target_id": tid, "result": result}
