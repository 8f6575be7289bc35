"""Commands and audit (§4): ordered checks, forwarding, results, audit before/after."""

from __future__ import annotations

import os
import sqlite3

import pytest_twisted

from relay_faketarget import fixture, registration_payload
from relay_helpers import eventually, register


def command(**changes):
    message = fixture("session.command.json")
    message.update(changes)
    return message


async def ready(relay, target=None, client=None):
    """A relay with one registered target and an established, bound session."""
    if relay.service is None:
        relay.start()
    target = target or relay.target()
    await relay.register(target)
    ws = await relay.session(client)
    await ws.hello()
    await ws.next("state", target_id=target.target_id)
    await eventually(lambda: "logs.tail" in target.methods())
    return target, ws


async def records(relay):
    return await relay.service.audit.all_records()


@pytest_twisted.ensureDeferred
async def test_successful_command_flow(relay):
    target, ws = await ready(relay)
    watcher = await relay.session(relay.pki.viewer)
    await watcher.hello()
    await watcher.next("state")
    ws.send(command(target={"child_path": "/root/invoice_writer"}))
    result = await ws.next("command_result")
    assert set(result) == set(fixture("session.command_result.json"))
    body = result["result"]
    assert set(body) == set(fixture("session.command_result.json")["result"])
    assert body["accepted"] is True and body["status"] == "completed"
    assert body["requested_by"] == "CN=demo operator"
    assert body["command_id"] == "cmd-7f3a" and body["correlation_id"] == "cmd-7f3a"
    # what the target got: the contract's request shape, requested_by from the identity
    method, params = [r for r in target.requests if str(r[0]).startswith("command.")][0]
    assert method == "command.pause_child"
    assert set(params) == set(fixture("ipc.command.request.json")["params"])
    assert params["requested_by"] == "CN=demo operator"
    assert params["correlation_id"] == "cmd-7f3a"
    assert params["target"] == {"child_path": "/root/invoice_writer", "child_manifest": None}
    # command_result is followed by a fresh state_delta
    types = [m["type"] for m in ws.received]
    after = types[types.index("command_result") + 1:]
    await eventually(lambda: "state_delta" in [m["type"] for m in ws.received[
        types.index("command_result") + 1:]])
    assert after is not None
    # audit: accepted before forwarding, completed after, pushed to every bound session
    stored = await records(relay)
    assert [r.result for r in stored] == ["accepted", "completed"]
    assert stored[0].identity.principal == "CN=demo operator"
    assert stored[0].command == "pause_child" and stored[0].reason == "maintenance window"
    for session in (ws, watcher):
        audits = [await session.next("audit_event") for _ in range(2)]
        assert [a["audit"]["result"] for a in audits] == ["accepted", "completed"]
        assert set(audits[1]) == set(fixture("session.audit_event.json"))
        assert set(audits[1]["audit"]) == set(fixture("session.audit_event.json")["audit"])
        assert audits[1]["audit"]["identity"]["source"] == "mtls"


@pytest_twisted.ensureDeferred
async def test_logical_failure_is_failed_not_completed(relay):
    target, ws = await ready(relay)
    ws.send(command(command_id="cmd-80c1", target={"child_path": "/root/nope"}))
    result = (await ws.next("command_result"))["result"]
    assert result["accepted"] is False and result["status"] == "failed"
    assert result["error"]["code"] == "unknown_child"
    # no state_delta in the result: a fresh state follows instead
    assert (await ws.next("state"))["target_id"] == target.target_id
    await eventually(lambda: len(relay.service.hub.sessions) == 1)
    stored = await records(relay)
    assert [r.result for r in stored] == ["accepted", "failed"]
    assert "unknown_child" in stored[1].detail


@pytest_twisted.ensureDeferred
async def test_checks_in_order_each_refused_and_audited(relay):
    relay.start()
    limited = relay.target("limited-target")
    body = registration_payload("limited-target", limited.path)
    body["supported_commands"] = [c for c in body["supported_commands"]
                                  if c["name"] != "restart_child"]
    await register(relay.registration_path, body)
    target, ws = await ready(relay)
    await ws.next("state", target_id="limited-target")
    await eventually(lambda: "logs.tail" in limited.methods())
    # a second target exists but this session filtered it away
    tid = target.target_id
    cases = [
        (command(target_id="nobody"), "target_not_bound"),
        (command(target_id=None), "target_not_bound"),
        (command(target_id="limited-target", command="restart_child"), "unsupported_command"),
        (command(command="reboot_everything"), "unsupported_command"),
        (command(command_id="  "), "invalid_message_schema"),
        (command(command_id="c1", target="x"), "invalid_message_schema"),
        (command(command_id="c2", confirmed="yes"), "invalid_message_schema"),
        (command(command_id="c3", requested_by="CN=root"), "requested_by_override"),
        (command(command_id="c4", reason=" "), "empty_reason"),
        (command(command_id="c5", reason=None), "empty_reason"),
        # several failures at once: the earliest check wins
        (command(command_id="c6", reason="", command="remove_child", confirmed=False,
                 requested_by="x"), "requested_by_override"),
        (command(command_id="c7", reason="", command="remove_child"), "empty_reason"),
        (command(command_id="c8", command="remove_child"), "confirmation_required"),
        (command(command_id="c9", command="shutdown_tree", confirmed=False),
         "confirmation_required"),
        (command(command_id="c10", bogus=1), "unsupported_field"),
    ]
    for message, code in cases:
        ws.send(message)
        error = (await ws.next("error"))["error"]
        assert error["code"] == code, (message, error)
        assert error["stage"] == "command_validate"
        if isinstance(message.get("target_id"), str) and message["target_id"] in (
                tid, "limited-target"):
            assert error["target_id"] == message["target_id"]
    await eventually(lambda: len(relay.service.audit._pool.working) == 0
                     and relay.service.audit._pool._queue.qsize() == 0)
    stored = await records(relay)
    assert len(stored) == len(cases)
    assert all(r.result == "rejected" for r in stored)
    assert [r.detail.split(":")[0] for r in stored] == [code for _, code in cases]
    assert not [r for r in target.requests if str(r[0]).startswith("command.")]


@pytest_twisted.ensureDeferred
async def test_not_permitted_and_target_unavailable(relay):
    target, ws = await ready(relay, client=None)
    viewer = await relay.session(relay.pki.viewer)
    await viewer.hello()
    await viewer.next("state")
    viewer.send(command())
    assert (await viewer.next("error"))["error"]["code"] == "command_not_permitted"
    # the ordered operator may pause but not quarantine (list grant)
    ordered = await relay.session(relay.pki.ordered_operator)
    await ordered.hello()
    await ordered.next("state")
    ordered.send(command(command="quarantine_child", command_id="q1"))
    assert (await ordered.next("error"))["error"]["code"] == "command_not_permitted"
    ordered.send(command(command_id="p1"))
    result = (await ordered.next("command_result"))["result"]
    assert result["requested_by"] == "O=Example Ops, CN=demo operator"
    await target.stop()
    await ws.next("connection_state")
    ws.send(command(command_id="p2"))
    error = (await ws.next("error"))["error"]
    assert error["code"] == "target_unavailable" and error["retryable"] is True


@pytest_twisted.ensureDeferred
async def test_command_before_hello_is_refused_audited_and_closed(relay):
    relay.start()
    ws = await relay.session()
    await ws.next("server_hello")
    ws.send(command())
    assert (await ws.next("error"))["error"]["code"] == "session_not_established"
    await ws.closed_d
    await eventually(lambda: relay.service.audit._pool._queue.qsize() == 0)
    stored = await records(relay)
    assert [(r.result, r.command_id) for r in stored] == [("rejected", "cmd-7f3a")]


async def hanging(relay, **sections):
    """A bound session and a target registered with 1 s command timeouts that stopped
    answering."""
    relay.start(**sections)
    target = relay.target()
    body = registration_payload(target.target_id, target.path)
    for spec in body["supported_commands"]:
        spec["timeout_seconds"] = 1
    await register(relay.registration_path, body)
    ws = await relay.session()
    await ws.hello()
    await ws.next("state")
    await eventually(lambda: "logs.tail" in target.methods())
    target.hang = True
    return ws


@pytest_twisted.ensureDeferred
async def test_command_timeout_uses_registration_timeout(relay):
    ws = await hanging(relay)
    ws.send(command())
    result = (await ws.next("command_result", timeout=3))["result"]
    assert result["status"] == "failed" and result["error"]["code"] == "command_timeout"
    assert [r.result for r in await records(relay)] == ["accepted", "failed"]


@pytest_twisted.ensureDeferred
async def test_commands_in_flight_per_session_are_capped(relay):
    ws = await hanging(relay, limits={"max_commands_in_flight": 2})
    for index in range(3):
        ws.send(command(command_id=f"c{index}"))
    error = (await ws.next("error"))["error"]
    assert (error["code"], error["retryable"]) == ("too_many_commands", True)
    assert "at most 2 commands" in error["message"]
    results = [(await ws.next("command_result", timeout=5))["result"] for _ in range(2)]
    assert sorted(r["command_id"] for r in results) == ["c0", "c1"]
    assert {r["error"]["code"] for r in results} == {"command_timeout"}
    stored = sorted((r.command_id, r.result) for r in await records(relay))
    assert stored == [("c0", "accepted"), ("c0", "failed"), ("c1", "accepted"),
                      ("c1", "failed"), ("c2", "rejected")]


@pytest_twisted.ensureDeferred
async def test_audit_write_failure_refuses_the_command(relay):
    relay.start(audit={"busy_timeout_ms": 100})
    target, ws = await ready(relay)
    await relay.service.audit_ready
    blocker = sqlite3.connect(relay.service.config.audit.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        ws.send(command())
        error = (await ws.next("error", timeout=5))["error"]
        assert error["code"] == "audit_unavailable" and error["retryable"] is True
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert not [r for r in target.requests if str(r[0]).startswith("command.")]
    # watching continued meanwhile, and commands work again once the database does
    event = target.emit_event()
    assert (await ws.next("event"))["event"] == event
    ws.send(command(command_id="again"))
    assert (await ws.next("command_result"))["result"]["status"] == "completed"


@pytest_twisted.ensureDeferred
async def test_audit_replay_on_bind_and_durability(relay):
    relay.start(limits={"audit_replay": 3})
    target, ws = await ready(relay)
    for index in range(3):
        ws.send(command(command_id=f"c{index}"))
        await ws.next("command_result")
    late = await relay.session()
    await late.hello()
    await late.next("state")
    replay = [await late.next("audit_event") for _ in range(3)]
    assert [a["audit"]["audit_id"] for a in replay] == ["a-000004", "a-000005", "a-000006"]
    types = [m["type"] for m in late.received]
    assert types.index("state") < types.index("audit_event")
    # the table is append-only and survives a restart of the service
    path = relay.service.config.audit.path
    await relay.service.stopService()
    conn = sqlite3.connect(path)
    try:
        for statement in ("UPDATE audit SET result='x'", "DELETE FROM audit"):
            try:
                conn.execute(statement)
                raise AssertionError(f"{statement} was allowed")
            except sqlite3.DatabaseError as e:
                assert "append-only" in str(e)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 6
    finally:
        conn.close()
    assert os.path.exists(path)
