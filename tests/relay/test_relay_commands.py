"""Commands and audit (§4) over real wss://, a fake target's real socket and the SQLite
audit store: the wiring of what test_relay_command_units.py checks in memory."""

from __future__ import annotations

import os
import sqlite3

import pytest_twisted

from relay_faketarget import fixture
from relay_helpers import eventually, ready


def command(**changes):
    message = fixture("session.command.json")
    message.update(changes)
    return message


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
    at = [m["type"] for m in ws.received].index("command_result")
    await eventually(lambda: "state_delta" in [m["type"] for m in ws.received[at + 1:]])
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
    ids = [a["audit"]["audit_id"] for a in replay]
    assert [i.rsplit("-", 1)[0] for i in ids] == ["a-000004", "a-000005", "a-000006"]
    assert len({i.rsplit("-", 1)[1] for i in ids}) == 1  # one opening of the file
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


def audit_files(path):
    return [p for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)]


@pytest_twisted.ensureDeferred
async def test_audit_file_is_created_0600(relay):
    relay.start()
    await relay.service.audit_ready
    path = relay.service.config.audit.path
    target, ws = await ready(relay)
    ws.send(command())
    await ws.next("command_result")
    for name in audit_files(path):
        assert os.stat(name).st_mode & 0o777 == 0o600, name


@pytest_twisted.ensureDeferred
async def test_a_deleted_audit_file_refuses_commands_and_ids_never_repeat(relay):
    relay.start()
    target, ws = await ready(relay)
    path = relay.service.config.audit.path
    ws.send(command(command_id="before"))
    assert (await ws.next("command_result"))["result"]["status"] == "completed"
    first = {r.audit_id for r in await records(relay)}
    assert len(first) == 2
    for name in audit_files(path):
        os.unlink(name)
    forwarded = target.methods().count("command.restart_child")
    ws.send(command(command_id="while-missing"))
    error = (await ws.next("error"))["error"]
    assert error["code"] == "audit_unavailable" and error["retryable"] is True
    assert target.methods().count("command.restart_child") == forwarded  # not forwarded
    await eventually(lambda: relay.service.audit.problem is not None, what="watch noticed")
    assert "missing" in relay.service.audit.problem
    assert not os.path.exists(path), "never recreated under a running relay"
    # a restart starts a new file; its ids cannot be those of the lost one
    await relay.close()
    relay.sessions.clear()
    relay.targets.clear()
    relay.start()
    target, ws = await ready(relay)
    ws.send(command(command_id="after"))
    assert (await ws.next("command_result"))["result"]["status"] == "completed"
    second = {r.audit_id for r in await records(relay)}
    assert len(second) == 2 and not first & second
    assert {i.rsplit("-", 1)[0] for i in first} == {i.rsplit("-", 1)[0] for i in second}


@pytest_twisted.ensureDeferred
async def test_a_replaced_audit_file_is_noticed_and_written_from_then_on(relay):
    relay.start()
    target, ws = await ready(relay)
    path = relay.service.config.audit.path
    ws.send(command(command_id="one"))
    await ws.next("command_result")
    # an older copy put in place of the file (a restore): another inode at the same path
    conn = sqlite3.connect(path)
    copy = sqlite3.connect(path + ".copy")
    conn.backup(copy)
    conn.close()
    copy.close()
    os.replace(path + ".copy", path)
    assert not relay.service.audit.writable
    await eventually(lambda: relay.service.audit.writable, what="reopened")
    ws.send(command(command_id="two"))
    assert (await ws.next("command_result"))["result"]["status"] == "completed"
    rows = sqlite3.connect(path).execute(
        "SELECT audit_id, command_id, result FROM audit ORDER BY seq").fetchall()
    assert [(c, r) for _, c, r in rows] == [("one", "accepted"), ("one", "completed"),
                                            ("two", "accepted"), ("two", "completed")]
    assert len({a for a, _, _ in rows}) == 4


@pytest_twisted.ensureDeferred
async def test_a_filter_on_one_of_two_targets_keeps_the_other_bound_and_commandable(relay):
    relay.start()
    a, b = relay.target("target-a"), relay.target("target-b")
    await relay.register(a)
    await relay.register(b)
    ws = await relay.session()
    await ws.hello()
    for target in (a, b):
        await ws.next("state", target_id=target.target_id)
    await eventually(lambda: all("logs.tail" in t.methods() for t in (a, b)))
    ws.send({"type": "log_event_filter_conditions", "target_ids": ["target-a"]})
    await eventually(lambda: relay.service.hub.sessions and all(
        s.filter_version == 1 for s in relay.service.hub.sessions.values()))
    b.emit_event("child_failed")
    wanted = a.emit_event("child_failed")
    assert (await ws.next("event"))["event"] == wanted
    assert [m for m in ws.of_type("event") if m["target_id"] == "target-b"] == []
    # target-b is still bound: its link stays open and its commands go through
    (session,) = relay.service.hub.sessions.values()
    assert session.bound == {"target-a", "target-b"} and len(b.connections) == 1
    ws.send(command(command_id="cmd-b", target_id="target-b",
                    target={"child_path": "/root/invoice_writer"}))
    result = await ws.next("command_result", target_id="target-b")
    assert result["result"]["status"] == "completed" and result["result"]["command_id"] == "cmd-b"
    assert await ws.next("state_delta", target_id="target-b")
    assert [m for m in ws.of_type("event") if m["target_id"] == "target-b"] == []
