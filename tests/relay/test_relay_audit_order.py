"""The SQLite audit store's one thread: a command's record is never queued behind replay
reads (real SQLite file, real thread, real reactor)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer, reactor

from relay_memory import OPERATOR
from supervisor.relay.audit import AuditRecord, AuditStore


def record(command_id: str) -> AuditRecord:
    return AuditRecord(session_id="s", identity=OPERATOR, target_id="t", command_id=command_id,
                       command="pause_child", target={"child_path": "/root/w"}, reason="why",
                       confirmed=False, result="accepted", detail="forwarded to target",
                       occurred_at=1.0)


@pytest_twisted.ensureDeferred
async def test_writes_go_before_replay_reads_queued_ahead_of_them(tmp_path):
    store = AuditStore(str(tmp_path / "audit.sqlite3"), reactor)
    await store.open()
    try:
        done: list[str] = []

        def note(name):
            return lambda result: done.append(name) or result

        calls = [store.append(record("first")).addCallback(note("write first"))]
        calls += [store.recent("t", 200).addCallback(note(f"read {i}")) for i in range(20)]
        calls.append(store.append(record("admin")).addCallback(note("write admin")))
        reads = await defer.gatherResults(calls)
        assert done[:2] == ["write first", "write admin"]
        assert done[2:] == [f"read {i}" for i in range(20)]
        # every read sees what was written before it was asked for, and the later write
        assert [r.command_id for r in reads[1]] == ["first", "admin"]
    finally:
        await store.close()
