"""The lean ``status`` read and the reuse of encoded ``state``/``status`` results."""

from __future__ import annotations

import json
import os
import sys

import pytest_twisted
from twisted.internet import reactor

from supervisor.config.target import IpcConfig
from supervisor.ipc.server import IpcServer
from supervisor.testing import ManualTask, TreeHarness
from supervisor.tree.runtime import Supervisor
from supervisor.tree.spec import ChildKind, ChildSpec, Policy, SupervisorSpec
from supervisor.wire.ndjson import encode
from tests.ipc_support import TARGET_ID, SocketBackedTransport, Target
from tests.waiting import eventually

ZERO_BACKOFF = Policy(initial_backoff_ms=0, max_backoff_ms=0, jitter_ratio=0)


class Wired:
    """A harness tree behind an IpcServer connection on an in-memory transport."""

    def __init__(self) -> None:
        self.harness = TreeHarness(SupervisorSpec(policy=ZERO_BACKOFF, children=[
            ChildSpec("worker", ChildKind.TASK, factory=ManualTask()),
            ChildSpec("billing", ChildKind.TASK, factory=ManualTask()),
        ]), target_id=TARGET_ID).start()
        config = IpcConfig(enabled=True, target_id=TARGET_ID, path="/unused")
        self.server = IpcServer(self.harness.supervisor, config, None, self.harness.clock)
        self.protocol = self.server.buildProtocol(None)
        self.transport = SocketBackedTransport()
        self.protocol.makeConnection(self.transport)
        self.count = 0

    def call(self, method: str) -> bytes:
        """One request; the raw answer line."""
        self.count += 1
        self.transport.clear()
        request = {"request_id": f"r{self.count}", "method": method, "params": {"target_id": TARGET_ID}}
        self.protocol.dataReceived(json.dumps(request).encode() + b"\n")
        (line,) = self.transport.value().splitlines(keepends=True)
        return line


def test_status_is_one_flat_row_per_child_encoded_like_every_answer():
    wired = Wired()
    line = wired.call("status")
    answer = json.loads(line)
    assert line == encode(answer), "the spliced answer is the one encoding of the wire"
    assert answer["request_id"] == "r1" and answer["ok"] is True
    result = answer["result"]
    assert result["type"] == "status" and result["target_id"] == TARGET_ID
    assert result["instance_id"] == wired.harness.supervisor.tree.instance_id
    assert result["state_generation"] == wired.harness.supervisor.tree.state_generation
    assert [r["child_path"] for r in result["rows"]] == ["/root/worker", "/root/billing"]
    row = result["rows"][0]
    assert row == {"child_path": "/root/worker", "kind": "child_task", "lifecycle_state": "running",
                   "health": "unknown", "readiness": "ready", "pid": None, "generation": 1,
                   "restart_count": 0,
                   "last_failure": None, "started_at": row["started_at"],
                   "started_at_unix_nanos": row["started_at_unix_nanos"], "resources": None}
    assert row["started_at"] is not None and isinstance(row["started_at_unix_nanos"], int)


def test_an_encoded_result_is_reused_while_the_generation_stands_and_rebuilt_after():
    wired = Wired()
    server = wired.server
    first = wired.call("status")
    again = wired.call("status")
    assert (server.result_encodings, server.result_reuses) == (1, 1)
    assert json.loads(first)["result"] == json.loads(again)["result"]
    assert json.loads(again)["request_id"] == "r2"

    generation = wired.harness.supervisor.tree.state_generation
    wired.harness.crash("/root/worker")
    wired.harness.advance(0)
    assert wired.harness.supervisor.tree.state_generation > generation
    after = json.loads(wired.call("status"))["result"]
    assert server.result_encodings == 2
    assert after["state_generation"] == wired.harness.supervisor.tree.state_generation
    assert after["rows"][0]["restart_count"] == 1
    assert after["rows"][0]["last_failure"] is not None


def test_a_reused_state_is_rebuilt_when_a_log_arrives_without_a_new_generation():
    wired = Wired()
    server = wired.server
    first = json.loads(wired.call("state"))["result"]["state"]
    wired.call("state")
    assert (server.result_encodings, server.result_reuses) == (1, 1)
    generation = wired.harness.supervisor.tree.state_generation
    wired.harness.supervisor.tree.log("info", "a line of text", {})
    assert wired.harness.supervisor.tree.state_generation == generation
    fresh = json.loads(wired.call("state"))["result"]["state"]
    assert server.result_encodings == 2
    assert fresh["recent_logs"][-1]["message"] == "a line of text"
    assert len(fresh["recent_logs"]) == len(first["recent_logs"]) + 1
    # status shows nothing a log changes: its encoding stands
    wired.call("status")
    wired.harness.supervisor.tree.log("info", "another line", {})
    wired.call("status")
    assert server.result_encodings == 3 and server.result_reuses == 2


@pytest_twisted.ensureDeferred
async def test_status_over_the_socket_names_a_process_child_pid():
    command = [sys.executable, "-S", "-c", "import time; time.sleep(60)"]
    target = Target(children=[ChildSpec("sleeper", ChildKind.PROCESS, command=command)]).start()
    try:
        sleeper = target.supervisor.child("/root/sleeper")
        await eventually(lambda: sleeper.state.value == "running", what="the process child running")
        client = await target.connect()
        answer = await client.call("status", {"target_id": TARGET_ID})
        (row,) = answer["result"]["rows"]
        assert row["kind"] == "child_process" and row["lifecycle_state"] == "running"
        assert row["pid"] == sleeper.runner.pid
        os.kill(row["pid"], 0)  # a live process
        refused = await client.call("status", {"target_id": "another"}, "r2")
        assert refused["ok"] is False and refused["error"]["code"] == "validation_failed"
    finally:
        await target.stop()
    stopped = target.supervisor.lean_status()["rows"][0]
    assert (stopped["pid"], stopped["started_at"]) == (None, None)


def test_a_tree_lean_status_reads_without_ipc():
    sup = Supervisor(SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())]),
                     reactor=reactor, clock=reactor)
    status = sup.lean_status("shown name")
    assert status["display_name"] == "shown name"
    assert status["rows"][0]["lifecycle_state"] == "stopped"
