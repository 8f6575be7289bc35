"""``supervisor.testing.MemoryTarget``: the in-memory target users test their own clients
against answers the IPC protocol (CONTRACTS.md §1) as a real target does."""

from __future__ import annotations

import json
import pathlib

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock

from supervisor.testing import MemoryTarget
from supervisor.wire.client import NDJSONClientProtocol, RemoteError

EXAMPLES = pathlib.Path(__file__).parent / "contract_examples"


def example(name: str):
    return json.loads((EXAMPLES / name).read_text())


class Client:
    """One connection to the target, with every push it received."""

    def __init__(self, target: MemoryTarget, clock: Clock) -> None:
        self.clock = clock
        self.pushes: list[dict] = []
        got = []
        target.endpoint().connect(Factory.forProtocol(lambda: NDJSONClientProtocol(
            clock, default_timeout=5, on_push=self.pushes.append))).addCallback(got.append)
        clock.advance(0)
        (self.protocol,) = got

    def call(self, method, params=None):
        outcome = []
        self.protocol.request(method, params).addBoth(outcome.append)
        self.clock.advance(0)
        (result,) = outcome
        return result


def subscribed(target, clock, since=None):
    client = Client(target, clock)
    params = {"target_id": target.target_id, "session_established": True}
    if since is not None:
        params["since_sequence"] = since
    client.call("events.subscribe", params)
    client.call("logs.tail", {**params, "lines": 2})
    return client


def test_hello_and_state_have_the_contracts_shapes():
    clock = Clock()
    target = MemoryTarget("payments-worker-a", clock,
                          children={"invoice_writer": "paused", "worker": "running"})
    client = Client(target, clock)
    hello = client.call("hello")
    assert set(hello) == set(example("ipc.hello.response.json")["result"])
    assert hello["registration"] == target.registration()
    assert set(target.registration()) == set(example("registration.request.json"))
    state = client.call("state", {"target_id": target.target_id})["state"]
    contract = example("ipc.state.response.json")["result"]["state"]
    # beside the example's fields, the documented extension fields (docs/protocol.md)
    assert set(state) == set(contract) | {"target_resources"}
    assert set(state["topology"]["nodes"][1]) == set(contract["topology"]["nodes"][1])
    assert set(state["runtime_state"][0]) == set(contract["runtime_state"][0]) | {"resources"}
    assert [r["lifecycle_state"] for r in state["runtime_state"]] == ["paused", "running"]
    assert state["target"]["instance_id"] == target.instance_id
    assert target.methods() == ["hello", "state"]


def test_subscriptions_replay_after_since_sequence_then_stream():
    clock = Clock()
    target = MemoryTarget("t", clock)
    for _ in range(3):
        target.emit_event()
        target.emit_log()
    client = subscribed(target, clock, since=1)
    assert [(p["type"], (p.get("event") or p.get("log"))["sequence"]) for p in client.pushes] \
        == [("event", 2), ("event", 3), ("log", 2), ("log", 3)]
    event = target.emit_event("child_failed")
    target.report_dropped(4, 1)
    clock.advance(0)
    assert client.pushes[-2] == {"type": "event", "target_id": "t", "event": event}
    assert event["severity"] == "error" and event["sequence"] == 4
    assert client.pushes[-1]["type"] == "dropped_count"
    assert Client(target, clock).pushes == []  # only subscribed connections get pushes


def test_refusals_carry_the_contracts_codes():
    clock = Clock()
    target = MemoryTarget("t", clock)
    client = Client(target, clock)
    for method, params, code in [
        ("events.subscribe", {"target_id": "t"}, "session_required"),
        ("state", {"target_id": "other"}, "validation_failed"),
        ("restart", {"target_id": "t"}, "unsupported_method"),
        ("command.pause_child", {"target_id": "t", "command": "resume_child"},
         "invalid_command_params"),
    ]:
        failure = client.call(method, params)
        assert isinstance(failure.value, RemoteError) and failure.value.code == code, method


def test_commands_change_the_tree_and_push_what_changed():
    clock = Clock()
    target = MemoryTarget("t", clock, children={"worker": "running"})
    client = subscribed(target, clock)

    def run(command, path="/root/worker", **target_fields):
        params = {"command_id": f"c-{command}", "target_id": "t", "command": command,
                  "target": {"child_path": path, **target_fields}, "reason": "test",
                  "requested_by": "CN=test", "confirmed": True}
        clock.advance(0)
        return client.call(f"command.{command}", params)["result"]

    paused = run("pause_child")
    assert paused["status"] == "completed" and target.children == {"worker": "paused"}
    assert paused["state_delta"]["runtime_state"][0]["lifecycle_state"] == "paused"
    assert [p["type"] for p in client.pushes[-2:]] == ["event", "state_delta"]
    assert client.pushes[-2]["event"]["correlation_id"] == "c-pause_child"
    assert run("pause_child", "/root/nope")["error"]["code"] == "unknown_child"
    assert run("add_child", None, child_manifest={"name": "extra"})["status"] == "completed"
    assert run("add_child", None, child_manifest={"name": "extra"})["error"]["code"] == \
        "child_exists"
    assert run("remove_child", "/root/extra")["state_delta"]["topology"]["declaration_order"] \
        == ["/root", "/root/worker"]
    assert run("shutdown_tree", None)["status"] == "completed"
    assert target.children == {"worker": "stopped"}


def test_a_frozen_target_answers_when_thawed_and_a_stopped_one_refuses():
    clock = Clock()
    target = MemoryTarget("t", clock)
    client = Client(target, clock)
    target.freeze()
    outcome = []
    client.protocol.request("hello", None).addBoth(outcome.append)
    clock.advance(0)
    assert outcome == [] and not target.requests
    target.thaw()
    clock.advance(0)
    assert outcome[0]["type"] == "hello"
    target.stop()
    clock.advance(0)
    assert not client.protocol.connected and target.connections == []
    refused = []
    target.endpoint().connect(Factory()).addErrback(refused.append)
    clock.advance(0)
    assert refused
    target.start()
    assert Client(target, clock).call("hello")["target_id"] == "t"


def test_a_restart_is_a_new_instance_with_new_sequences_and_journals_are_bounded():
    clock = Clock()
    target = MemoryTarget("t", clock, journal_capacity=5)
    first = target.instance_id
    for _ in range(8):
        target.emit_event()
    assert [e["sequence"] for e in target.events] == [4, 5, 6, 7, 8]
    target.restart()
    assert target.instance_id != first and target.emit_event()["sequence"] == 1
