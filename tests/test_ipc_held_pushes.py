"""Pushes to an IPC connection are held until the end of the reactor turn and written joined,
never reordered with answers, never lost when the connection closes, and bounded (fakes only:
StringTransport, Clock)."""

from __future__ import annotations

import json

from twisted.internet.testing import StringTransport

from supervisor.config.target import IpcConfig
from supervisor.ipc.server import IpcServer
from supervisor.testing import ManualTask, TreeHarness
from supervisor.tree.spec import ChildKind, ChildSpec, SupervisorSpec
from supervisor.wire.ndjson import OutboundQueue
from supervisor.wire.turns import WRITE_BATCH_BYTES
from tests.ipc_support import SocketBackedTransport


class CountingTransport(StringTransport):
    """Counts the writes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def held_queue(max_pending: int = 100, max_bytes: int = 1 << 20):
    transport = CountingTransport()
    turns: list[OutboundQueue] = []
    dropped: list[str] = []
    out = OutboundQueue(transport, max_pending, dropped.append, max_pending_bytes=max_bytes,
                        at_end_of_turn=turns.append)
    return out, transport, turns, dropped


def test_the_pushes_of_a_turn_are_one_write_at_its_end():
    out, transport, turns, _ = held_queue()
    for i in range(5):
        out.send(b"push %d\n" % i, "event")
    assert transport.value() == b"" and turns == [out], "held, and one end-of-turn call"
    out.flush()
    assert transport.value() == b"".join(b"push %d\n" % i for i in range(5))
    assert transport.writes == 1
    out.send(b"next\n", "log")
    assert turns == [out, out], "a new turn asks again"


def test_an_answer_goes_after_the_pushes_held_before_it():
    out, transport, turns, _ = held_queue()
    out.send(b"push 1\n", "event")
    out.send(b"answer\n")  # not held: written at once, after the push
    assert transport.value() == b"push 1\nanswer\n"
    out.flush()
    assert transport.value() == b"push 1\nanswer\n"


def test_held_pushes_are_written_as_soon_as_a_batch_is_full():
    out, transport, turns, _ = held_queue()
    line = b"x" * 999 + b"\n"
    sent = 0
    while not transport.value():
        out.send(line, "log")
        sent += 1
    assert sent * len(line) >= WRITE_BATCH_BYTES > (sent - 1) * len(line)
    assert transport.value() == line * sent


def test_pushes_held_when_the_reader_stops_wait_in_the_bounded_queue():
    out, transport, turns, dropped = held_queue(max_pending=3)
    for i in range(5):
        out.send(b"push %d\n" % i, "event")
    out.pauseProducing()  # the socket buffer filled before the turn ended
    out.flush()
    assert transport.value() == b"" and out.pending == 3 and dropped == ["event", "event"]
    out.resumeProducing()
    assert transport.value() == b"push 2\npush 3\npush 4\n"


def test_closing_writes_what_is_held_first():
    out, transport, _, _ = held_queue()
    out.send(b"last push\n", "event")
    out.close()
    assert transport.value() == b"last push\n" and transport.disconnecting


def test_a_stopped_producer_forgets_what_is_held():
    out, transport, _, _ = held_queue()
    out.send(b"push\n", "event")
    out.stopProducing()
    out.flush()
    assert transport.value() == b""


def test_a_server_flushes_every_connection_pushed_to_in_a_turn_with_one_delayed_call():
    harness = TreeHarness(
        SupervisorSpec(children=[ChildSpec("w", ChildKind.TASK, factory=ManualTask())]),
        target_id="held",
    ).start()
    server = IpcServer(harness.supervisor, IpcConfig(enabled=True, target_id="held",
                                                     path="/unused"), None, harness.clock)
    transports = []
    for _ in range(3):
        protocol = server.buildProtocol(None)
        transport = SocketBackedTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(json.dumps({"request_id": "s", "method": "events.subscribe",
                                          "params": {"target_id": "held",
                                                     "session_established": True}}
                                          ).encode() + b"\n")
        assert b'"ok":true' in transport.value()
        transports.append(transport)
    harness.clock.advance(0)  # the replay of what the journal holds
    for transport in transports:
        transport.clear()
    calls_before = len(harness.clock.getDelayedCalls())
    tree = harness.supervisor.tree
    for i in range(10):
        tree.emit("child_heartbeat_stale", "/root/w", "w", "c", {"i": i})
    assert all(t.value() == b"" for t in transports)
    assert len(harness.clock.getDelayedCalls()) == calls_before + 1
    harness.clock.advance(0)
    for transport in transports:
        pushes = [json.loads(line) for line in transport.value().splitlines()]
        assert [p["event"]["payload"]["i"] for p in pushes if p["type"] == "event"] == list(
            range(10))
