"""Hostile and stuck peers on the real IPC socket: no crash, no fd leak, no unbounded wait."""

from __future__ import annotations

import os
import random

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from tests.waiting import eventually
from tests.ipc_support import TARGET_ID, Target


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Raw(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason=None) -> None:
        self.closed = True


async def raw_connect(path: str) -> Raw:
    proto = Raw()
    await UNIXClientEndpoint(reactor, path, timeout=5).connect(Factory.forProtocol(lambda: proto))
    return proto


@pytest_twisted.ensureDeferred
async def test_garbage_from_many_connections_leaks_no_file_descriptors():
    target = Target(max_request_bytes=4096).start()
    rng = random.Random(7)
    try:
        client = await target.connect()
        await client.call("hello")
        baseline = open_fds()
        for round_ in range(60):
            proto = await raw_connect(target.path)
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9000)))
            proto.transport.write(blob + (b"\n" if round_ % 2 else b""))
            await eventually(lambda: proto.data or proto.closed or len(blob) < 4096, what="a reaction")
            proto.transport.loseConnection()
            await eventually(lambda: proto.closed)
        await eventually(lambda: len(target.ipc_service.server.connections) == 1, what="server forgot them")
        await eventually(lambda: open_fds() <= baseline, what="fds back to baseline")
        reply = await client.call("hello", None, "still")
        assert reply["ok"] is True and reply["request_id"] == "still"
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_slowloris_half_lines_are_cut_off_by_the_idle_timeout():
    target = Target(idle_timeout_seconds=0.5).start()
    try:
        proto = await raw_connect(target.path)
        proto.transport.write(b'{"request_id": "sl')  # a line that never ends
        await eventually(lambda: proto.closed, timeout=5, what="slow peer closed")
    finally:
        await target.stop()


@pytest_twisted.ensureDeferred
async def test_a_subscriber_that_never_reads_does_not_hold_memory_or_stall_others():
    target = Target(max_pending_pushes=64).start()
    try:
        stuck = await raw_connect(target.path)
        stuck.transport.write(b'{"request_id":"s","method":"logs.tail","params":{"target_id":"%s","session_established":true,"lines":0}}\n' % TARGET_ID.encode())
        await eventually(lambda: b'"subscription"' in stuck.data)
        stuck.transport.pauseProducing()
        other = await target.connect()
        for i in range(20_000):
            target.supervisor.tree.log("info", "z" * 200, {"i": i})
        connection = max(target.ipc_service.server.connections, key=lambda c: c.dropped_logs)
        assert connection.out.pending <= 64 and connection.dropped_logs > 0
        assert (await other.call("hello", None, "ok"))["ok"] is True
        stuck.transport.resumeProducing()
    finally:
        await target.stop()
